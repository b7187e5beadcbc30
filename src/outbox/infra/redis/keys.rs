//! Where the partition streams live on a Redis Cluster: the hash slot of
//! a key, and the stream names that spread N partitions over the slots.

/// A Redis Cluster has this many hash slots.
const SLOTS: u32 = 16_384;

/// The hash slot of a key, as Redis Cluster computes it (CRC16 of the
/// hash tag, or of the whole key without one).
pub fn key_slot(key: &str) -> u16 {
    let tagged = key
        .find('{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.find('}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    (u32::from(crc16::State::<crc16::XMODEM>::calculate(tagged.as_bytes())) % SLOTS) as u16
}

/// The stream keys of `partitions` partitions of `base`: `base` itself for
/// one; otherwise `base:{p<k>}`, with a suffix in the hash tag where needed
/// so that partition k's slot falls in the k-th of `partitions` equal slot
/// ranges. A cluster made by `redis-cli --cluster create` splits the slots
/// evenly over its primaries, so the partitions spread over every primary
/// when there are at least as many partitions as primaries.
pub fn stream_keys(base: &str, partitions: u16) -> Vec<String> {
    if partitions <= 1 {
        return vec![base.to_owned()];
    }
    let n = u32::from(partitions);
    (0..n)
        .map(|k| {
            (0u32..)
                .map(|salt| {
                    if salt == 0 {
                        format!("{base}:{{p{k}}}")
                    } else {
                        format!("{base}:{{p{k}.{salt}}}")
                    }
                })
                .find(|key| u32::from(key_slot(key)) * n / SLOTS == k)
                .expect("some salt lands in every slot range")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_redis_cluster_keyslot() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("somekey"), 11058);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("foo{}{bar}"), key_slot("foo{}{bar}"));
        assert_ne!(key_slot("foo{}{bar}"), key_slot("bar"));
    }

    #[test]
    fn one_partition_is_the_base_stream_and_more_spread_over_the_slot_ranges() {
        assert_eq!(stream_keys("bo:events", 1), vec!["bo:events".to_owned()]);
        for n in [2u16, 3, 6, 16] {
            let keys = stream_keys("bo:events", n);
            assert_eq!(keys.len(), usize::from(n));
            for (k, key) in keys.iter().enumerate() {
                assert!(key.starts_with(&format!("bo:events:{{p{k}")), "{key}");
                let slot = u32::from(key_slot(key));
                assert_eq!(
                    slot * u32::from(n) / SLOTS,
                    k as u32,
                    "{key} in slot {slot}"
                );
            }
            // Every process computes the same names.
            assert_eq!(keys, stream_keys("bo:events", n));
        }
    }
}
