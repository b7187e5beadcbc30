use std::fmt;

/// An amount of wallet points. Always between 0 and [`Points::MAX`], so any
/// sum of a few thousand amounts still fits in an `i64` column.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct Points(i64);

impl TryFrom<i64> for Points {
    type Error = PointsError;

    fn try_from(amount: i64) -> Result<Self, PointsError> {
        Self::new(amount)
    }
}

impl From<Points> for i64 {
    fn from(points: Points) -> i64 {
        points.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PointsError {
    #[error("amount must not be negative")]
    Negative,
    #[error("amount must be at most {}", Points::MAX)]
    TooLarge,
}

impl Points {
    /// One trillion points: far above any price, far below `i64::MAX`.
    pub const MAX: i64 = 1_000_000_000_000;
    pub const ZERO: Points = Points(0);

    pub fn new(amount: i64) -> Result<Self, PointsError> {
        if amount < 0 {
            Err(PointsError::Negative)
        } else if amount > Self::MAX {
            Err(PointsError::TooLarge)
        } else {
            Ok(Self(amount))
        }
    }

    pub fn value(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Points) -> Option<Points> {
        Points::new(self.0.checked_add(other.0)?).ok()
    }

    /// The sum, at most [`Points::MAX`] (no wallet holds more, so a total
    /// that saturates is never payable).
    pub fn saturating_add(self, other: Points) -> Points {
        Points(self.0.saturating_add(other.0).min(Self::MAX))
    }

    pub fn checked_sub(self, other: Points) -> Option<Points> {
        Points::new(self.0.checked_sub(other.0)?).ok()
    }
}

impl fmt::Display for Points {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} points", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_negative_and_oversized_amounts() {
        assert_eq!(Points::new(-1), Err(PointsError::Negative));
        assert_eq!(Points::new(Points::MAX + 1), Err(PointsError::TooLarge));
        assert_eq!(Points::new(0).map(Points::value), Ok(0));
        assert_eq!(Points::new(Points::MAX).map(Points::value), Ok(Points::MAX));
    }

    #[test]
    fn arithmetic_never_leaves_the_range() {
        let max = Points::new(Points::MAX).unwrap();
        let one = Points::new(1).unwrap();
        assert_eq!(max.checked_add(one), None);
        assert_eq!(Points::ZERO.checked_sub(one), None);
        assert_eq!(one.checked_add(one).map(Points::value), Some(2));
        assert_eq!(one.checked_sub(one), Some(Points::ZERO));
    }
}
