use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl $name {
            pub fn value(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// A user of the identity provider (the JWT `sub`).
    UserId
);
id_type!(ConcertId);
id_type!(ScheduleId);
id_type!(SeatId);
id_type!(ReservationId);
id_type!(
    /// An order: the seats one buyer holds and pays for together.
    OrderId
);
id_type!(PaymentId);
id_type!(VendorId);
id_type!(CouponId);
id_type!(UserCouponId);
id_type!(TicketId);
