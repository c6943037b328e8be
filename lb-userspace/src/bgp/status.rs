//! Reading `birdc show protocols`: the state of each BGP session.

use std::collections::HashMap;

/// One BGP protocol's line of `show protocols`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// BGP's state (`Established`, `Active`, `Idle`, ...), or the
    /// protocol's (`down`, `start`) when BIRD gives no BGP state.
    pub state: String,
    pub up: bool,
}

/// The BGP sessions of `show protocols`, by protocol name. Columns: Name
/// Proto Table State Since Info; the Since column is one word
/// (`timeformat protocol "%s"` in our config) and Info starts with the
/// BGP state, maybe followed by the last error.
pub fn parse_protocols(text: &str) -> HashMap<String, Session> {
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() < 5 || words[1] != "BGP" {
                return None;
            }
            let state = words.get(5).unwrap_or(&words[3]).to_string();
            let up = state == "Established";
            Some((words[0].to_string(), Session { state, up }))
        })
        .collect()
}

/// How many routes `show route export PROTO count` says BIRD exports (0
/// when the protocol has no table up: "No valid tables").
pub fn parse_export_count(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let n = words.next()?.parse::<u64>().ok()?;
            (words.next() == Some("of")).then_some(n)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from BIRD 2.0.12 (our config, one session up, one trying,
    /// one refused, one disabled).
    const SHOW_PROTOCOLS: &str = "\
BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     1796065998    
vips4      Static     master4    up     1796065998    
vips6      Static     master6    up     1796065998    
peer1      BGP        ---        up     1796066003    Established   
peer2      BGP        ---        start  1796065998    Idle          
peer3      BGP        ---        start  1796065998    Active        Socket: Connection refused
peer4      BGP        ---        down   1796065998    
";

    #[test]
    fn sessions_and_their_states() {
        let s = parse_protocols(SHOW_PROTOCOLS);
        assert_eq!(s.len(), 4, "{s:?}");
        assert_eq!(
            s["peer1"],
            Session {
                state: "Established".into(),
                up: true
            }
        );
        assert_eq!((s["peer2"].state.as_str(), s["peer2"].up), ("Idle", false));
        assert_eq!(
            (s["peer3"].state.as_str(), s["peer3"].up),
            ("Active", false)
        );
        assert_eq!((s["peer4"].state.as_str(), s["peer4"].up), ("down", false));
        assert!(parse_protocols("BIRD 2.0.12 ready.\n").is_empty());
    }

    #[test]
    fn export_counts() {
        assert_eq!(
            parse_export_count(
                "BIRD 2.0.12 ready.\n1 of 1 routes for 1 networks in table master4\n"
            ),
            1
        );
        assert_eq!(
            parse_export_count(
                "BIRD 2.0.12 ready.\n0 of 0 routes for 0 networks in table master4\n"
            ),
            0
        );
        assert_eq!(
            parse_export_count("BIRD 2.0.12 ready.\nNo valid tables\n"),
            0
        );
    }
}
