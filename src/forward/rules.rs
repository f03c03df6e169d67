//! Forwarding rules (issue #10 item 2): what goes where. A rule names a peer and optional
//! filters (source facility, modality, AI flag); an instance that matches is queued once per
//! destination, in the commit that files it. Rules with an AI flag are applied when triage flags
//! the instance; an urgent flag also moves the study's queued instances ahead of the backlog.

use crate::triage::manifest::Urgency;

/// Outbox priority: higher is sent first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SendPriority {
    /// After everything else (a nightly backlog).
    Bulk,
    /// In arrival order.
    Normal,
    /// Ahead of the queue, and outside the peer's time windows.
    Urgent,
}

impl SendPriority {
    /// The number kept in the outbox.
    pub fn value(self) -> i64 {
        match self {
            SendPriority::Bulk => -10,
            SendPriority::Normal => 0,
            SendPriority::Urgent => URGENT,
        }
    }
}

/// Outbox priority from which windows are ignored.
pub const URGENT: i64 = 100;

/// A rule as written in the TOML's `[[forward]]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardRule {
    /// The peer's name.
    pub to: String,
    /// Only these modalities (Modality, 0008,0060); none: every modality.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modalities: Vec<String>,
    /// Only instances of these facilities; none: every facility.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_facilities: Vec<String>,
    /// Only instances that triage flags with at least this urgency (`routine`: any flag,
    /// `urgent`, `emergency`); queued when the flag is raised, not on arrival.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_flag: Option<Urgency>,
    /// `bulk`, `normal` (default) or `urgent`.
    #[serde(default = "normal")]
    pub priority: SendPriority,
}

fn normal() -> SendPriority {
    SendPriority::Normal
}

/// One destination an instance is queued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The peer's name.
    pub peer: String,
    /// Outbox priority (higher first).
    pub priority: i64,
}

/// What an instance is, for the rules.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    /// Its series' modality.
    pub modality: &'a str,
    /// The facility it belongs to.
    pub facility: &'a str,
}

/// Every rule, in configuration order.
#[derive(Debug, Clone, Default)]
pub struct ForwardRules {
    rules: Vec<ForwardRule>,
}

impl ForwardRules {
    /// The rules; each names a peer in `peers` (checked at start, so a typo stops start-up).
    pub fn new(rules: Vec<ForwardRule>, peers: &[String]) -> Result<ForwardRules, String> {
        for r in &rules {
            if !peers.contains(&r.to) {
                return Err(format!(
                    "[[forward]] to = {:?} names no peer: add a [[peers]] entry with that name or fix the rule",
                    r.to
                ));
            }
        }
        Ok(ForwardRules { rules })
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Destinations of an arriving instance: the rules without an AI flag it matches.
    pub fn on_arrival(&self, instance: Arrival<'_>) -> Vec<OutboxEntry> {
        self.matching(instance, |r| r.ai_flag.is_none())
    }

    /// Destinations of an instance triage flagged with `urgency`: the rules asking for that flag.
    pub fn on_flag(&self, instance: Arrival<'_>, urgency: Urgency) -> Vec<OutboxEntry> {
        self.matching(instance, |r| {
            r.ai_flag.is_some_and(|least| rank(urgency) >= rank(least))
        })
    }

    fn matching(
        &self,
        instance: Arrival<'_>,
        wanted: impl Fn(&ForwardRule) -> bool,
    ) -> Vec<OutboxEntry> {
        let mut out: Vec<OutboxEntry> = Vec::new();
        for rule in self
            .rules
            .iter()
            .filter(|r| wanted(r) && r.matches(instance))
        {
            let priority = rule.priority.value();
            match out.iter_mut().find(|e| e.peer == rule.to) {
                Some(e) => e.priority = e.priority.max(priority),
                None => out.push(OutboxEntry {
                    peer: rule.to.clone(),
                    priority,
                }),
            }
        }
        out
    }
}

/// The outbox priority an AI flag of `urgency` lifts a study's queued instances to.
pub fn flag_priority(urgency: Urgency) -> Option<i64> {
    match urgency {
        Urgency::Routine => None,
        Urgency::Urgent => Some(URGENT),
        Urgency::Emergency => Some(URGENT + 100),
    }
}

fn rank(u: Urgency) -> u8 {
    match u {
        Urgency::Routine => 0,
        Urgency::Urgent => 1,
        Urgency::Emergency => 2,
    }
}

impl ForwardRule {
    fn matches(&self, instance: Arrival<'_>) -> bool {
        let any_or = |list: &[String], value: &str| {
            list.is_empty() || list.iter().any(|v| v.eq_ignore_ascii_case(value))
        };
        any_or(&self.modalities, instance.modality)
            && any_or(&self.from_facilities, instance.facility)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(to: &str, modalities: &[&str]) -> ForwardRule {
        ForwardRule {
            to: to.into(),
            modalities: modalities.iter().map(|m| m.to_string()).collect(),
            from_facilities: Vec::new(),
            ai_flag: None,
            priority: SendPriority::Normal,
        }
    }

    fn peers() -> Vec<String> {
        vec!["hospital".into(), "hub".into()]
    }

    #[test]
    fn one_instance_is_queued_once_per_matching_destination() {
        let mut bulk = rule("hub", &[]);
        bulk.priority = SendPriority::Bulk;
        let rules = ForwardRules::new(
            vec![rule("hospital", &["CR", "DX"]), bulk, rule("hub", &["CR"])],
            &peers(),
        )
        .unwrap();
        let cr = rules.on_arrival(Arrival {
            modality: "CR",
            facility: "FA",
        });
        assert_eq!(
            cr,
            vec![
                OutboxEntry {
                    peer: "hospital".into(),
                    priority: 0
                },
                OutboxEntry {
                    peer: "hub".into(),
                    priority: 0
                }
            ]
        );
        let ct = rules.on_arrival(Arrival {
            modality: "CT",
            facility: "FA",
        });
        assert_eq!(
            ct,
            vec![OutboxEntry {
                peer: "hub".into(),
                priority: -10
            }]
        );
    }

    #[test]
    fn ai_flag_rules_apply_on_the_flag_not_on_arrival() {
        let mut urgent = rule("hospital", &["CR"]);
        urgent.ai_flag = Some(Urgency::Urgent);
        urgent.priority = SendPriority::Urgent;
        let rules = ForwardRules::new(vec![urgent], &peers()).unwrap();
        let cr = Arrival {
            modality: "CR",
            facility: "FA",
        };
        assert!(rules.on_arrival(cr).is_empty());
        assert!(rules.on_flag(cr, Urgency::Routine).is_empty());
        assert_eq!(rules.on_flag(cr, Urgency::Emergency)[0].priority, URGENT);
    }

    #[test]
    fn a_rule_naming_no_peer_stops_start_up() {
        assert!(ForwardRules::new(vec![rule("hopsital", &[])], &peers()).is_err());
    }

    #[test]
    fn source_facility_filters() {
        let mut r = rule("hub", &[]);
        r.from_facilities = vec!["FA".into()];
        let rules = ForwardRules::new(vec![r], &peers()).unwrap();
        assert_eq!(
            rules
                .on_arrival(Arrival {
                    modality: "CR",
                    facility: "FA"
                })
                .len(),
            1
        );
        assert!(rules
            .on_arrival(Arrival {
                modality: "CR",
                facility: "FC"
            })
            .is_empty());
    }
}
