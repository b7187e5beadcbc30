use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    widgets::Row,
};

use super::{Component, ListView};
use crate::app::{App, Tab};

/// Coupon campaigns: issued, remaining, redeemed, and the ledger's count.
pub struct CouponsTab;

impl Component for CouponsTab {
    fn draw(&self, app: &App, frame: &mut Frame, area: Rect) {
        let coupons = app
            .snapshot
            .as_ref()
            .map(|s| s.coupons.as_slice())
            .unwrap_or_default();
        let rows = coupons
            .iter()
            .map(|c| {
                Row::new(vec![
                    c.id.to_string(),
                    c.name.clone(),
                    c.quantity.to_string(),
                    c.issued.to_string(),
                    c.remaining.to_string(),
                    c.redeemed.to_string(),
                    c.ledger_issued.map_or("-".into(), |n| n.to_string()),
                    c.vendor_balance.to_string(),
                ])
            })
            .collect();
        ListView {
            title: "Coupon campaigns",
            header: Row::new(vec![
                "id",
                "name",
                "quantity",
                "issued",
                "remaining",
                "redeemed",
                "ledger",
                "vendor paid",
            ]),
            widths: &[
                Constraint::Length(5),
                Constraint::Min(16),
                Constraint::Length(9),
                Constraint::Length(8),
                Constraint::Length(10),
                Constraint::Length(9),
                Constraint::Length(8),
                Constraint::Length(12),
            ],
            empty: "No coupon campaigns.",
        }
        .render(frame, area, rows, Some(app.selected(Tab::Coupons)));
    }
}
