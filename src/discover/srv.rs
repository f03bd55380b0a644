//! RFC 6186 / RFC 8314 SRV records for mail submission, ordered as
//! RFC 2782 says: by priority, and within one priority by a weighted
//! random draw.

use super::{Address, Candidate, Login, Security, Source};

/// The two services, in the order RFC 8314 §5.1 prefers them.
pub const SERVICES: [(&str, Security); 2] = [
    ("_submissions._tcp", Security::Implicit),
    ("_submission._tcp", Security::StartTls),
];

/// One SRV record as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Lowercased, no trailing dot; "" for the root (".").
    pub target: String,
}

/// What a service's records say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Targets in the order to try them.
    Targets(Vec<Record>),
    /// A single record with target "." (RFC 2782): the service is
    /// decidedly not offered.
    NotOffered,
    /// No usable record.
    None,
}

/// Orders the records of one service. `draw(n)` returns a uniformly
/// random number in `0..=n`; tests pass a fixed one.
pub fn order(mut records: Vec<Record>, draw: &mut dyn FnMut(u32) -> u32) -> Answer {
    if records.len() == 1 && records.first().is_some_and(|r| r.target.is_empty()) {
        return Answer::NotOffered;
    }
    // A "." among others, or port 0, names nothing to connect to.
    records.retain(|r| !r.target.is_empty() && r.port != 0);
    if records.is_empty() {
        return Answer::None;
    }
    records.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let same = rest
            .iter()
            .take_while(|r| r.priority == first.priority)
            .count();
        let (group, tail) = rest.split_at(same);
        out.extend(weighted(group.to_vec(), draw));
        rest = tail;
    }
    Answer::Targets(out)
}

/// RFC 2782's selection within one priority: weight-0 records first in the
/// list, then repeatedly draw a number up to the weight sum and take the
/// first record whose running sum reaches it.
fn weighted(mut group: Vec<Record>, draw: &mut dyn FnMut(u32) -> u32) -> Vec<Record> {
    group.sort_by_key(|r| r.weight != 0);
    let mut out = Vec::with_capacity(group.len());
    while !group.is_empty() {
        let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
        let pick = draw(total).min(total);
        let mut running = 0u32;
        let index = group
            .iter()
            .position(|r| {
                running += u32::from(r.weight);
                running >= pick
            })
            .unwrap_or(0);
        out.push(group.remove(index));
    }
    out
}

/// The candidates of one service's ordered records.
pub fn candidates(
    name: &str,
    security: Security,
    records: &[Record],
    address: &Address,
) -> Vec<Candidate> {
    records
        .iter()
        .map(|r| Candidate {
            host: r.target.clone(),
            port: r.port,
            security,
            login: Login::Password,
            username: Some(address.full()),
            source: Source::Srv {
                name: name.to_string(),
            },
            note: (!address.owns(&r.target)).then_some(
                "the target is not under the address's domain: make sure it is your provider's",
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(priority: u16, weight: u16, target: &str) -> Record {
        Record {
            priority,
            weight,
            port: 587,
            target: target.into(),
        }
    }

    fn targets(a: Answer) -> Vec<String> {
        match a {
            Answer::Targets(t) => t.into_iter().map(|r| r.target).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn priority_first_then_weight() {
        let records = vec![
            rec(20, 0, "backup"),
            rec(10, 1, "light"),
            rec(10, 99, "heavy"),
            rec(10, 0, "zero"),
        ];
        // A draw of the maximum always takes the last record whose running
        // sum reaches the total: the heaviest of what is left, last in list.
        let mut max = |n: u32| n;
        assert_eq!(
            targets(order(records.clone(), &mut max)),
            ["heavy", "light", "zero", "backup"]
        );
        // A draw of 0 takes the first record: weight 0 ones come first.
        let mut zero = |_: u32| 0;
        assert_eq!(
            targets(order(records.clone(), &mut zero)),
            ["zero", "light", "heavy", "backup"]
        );
        // A draw of 2 among weights 0, 1, 99 passes the 1 and takes 99.
        let mut two = |n: u32| n.min(2);
        assert_eq!(
            targets(order(records, &mut two)),
            ["heavy", "light", "zero", "backup"]
        );
    }

    #[test]
    fn root_target_means_not_offered() {
        let mut d = |n: u32| n;
        assert_eq!(order(vec![rec(0, 0, "")], &mut d), Answer::NotOffered);
        assert_eq!(order(Vec::new(), &mut d), Answer::None);
        assert_eq!(
            targets(order(vec![rec(0, 0, ""), rec(1, 0, "a")], &mut d)),
            ["a"]
        );
        let mut zero_port = rec(0, 0, "a");
        zero_port.port = 0;
        assert_eq!(order(vec![zero_port], &mut d), Answer::None);
    }

    #[test]
    fn random_draws_reach_every_record() {
        // Weights 1 and 3: over all draws 0..=4 each record comes first
        // at least once, and "b" (weight 3) more often.
        let mut firsts = Vec::new();
        for fixed in 0..=4u32 {
            let mut d = |n: u32| fixed.min(n);
            firsts.push(targets(order(vec![rec(0, 1, "a"), rec(0, 3, "b")], &mut d))[0].clone());
        }
        let b = firsts.iter().filter(|t| *t == "b").count();
        assert!(
            b > 0 && b < firsts.len() && b * 2 > firsts.len(),
            "{firsts:?}"
        );
    }
}
