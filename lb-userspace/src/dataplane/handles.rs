//! Handles of their own on maps the daemon reads outside the controller:
//! the per-CPU counters (read at every scrape) and the flow table (walked
//! by the expiry sweep). Each holds duplicated map fds, so it can live in
//! another thread than the `Dataplane` and never needs the controller lock.

use std::os::fd::AsFd;

use aya::{
    Ebpf,
    maps::{Map, MapData, MapError},
};

use super::{DataplaneError, Result, map_err};

/// A second fd on map `name` of `ebpf`, as a `Map` of the same kind.
pub(super) fn dup(ebpf: &Ebpf, name: &'static str) -> Result<Map> {
    let data = match ebpf.map(name).ok_or(DataplaneError::MissingMap(name))? {
        Map::Array(d) | Map::PerCpuArray(d) | Map::HashMap(d) | Map::LruHashMap(d) => d,
        _ => {
            return Err(DataplaneError::Io {
                what: format!("map {name}"),
                source: std::io::Error::other(
                    "not an array or hash map: no handle is opened on it",
                ),
            });
        }
    };
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| DataplaneError::Io {
            what: format!("duplicating the fd of map {name}"),
            source,
        })?;
    MapData::from_fd(fd)
        .and_then(Map::from_map_data)
        .map_err(map_err(name))
}

/// `dup`, typed.
pub(super) fn open<T: TryFrom<Map, Error = MapError>>(
    ebpf: &Ebpf,
    name: &'static str,
) -> Result<T> {
    T::try_from(dup(ebpf, name)?).map_err(map_err(name))
}
