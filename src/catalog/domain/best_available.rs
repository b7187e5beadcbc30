//! Best-available: which seats an order of `quantity` gets when the buyer
//! names a grade, not seats.
//!
//! A party sits together: the pick is `quantity` seats next to each other
//! in one row when the schedule has such a block. Among those blocks, one
//! that strands no single empty seat between taken ones beats one that
//! does (a lone seat is the hardest to sell, pretix#1324); then the
//! front-most row, then the lowest seat number. Without such a block the
//! party is split over as few blocks as it can be, largest first, the last
//! part again placed so that it strands no seat when some place avoids it.

use std::cmp::Ordering;

/// One seat as the picker sees it: where it stands, whether anyone may
/// take it now, and whether the order may have it (free and of the grade
/// asked for). Seats of other grades are passed too: they decide what is
/// next to what and which empty seats a pick would strand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatSpot<Id> {
    pub id: Id,
    pub section: Option<String>,
    pub row: Option<String>,
    /// Seats are next to each other when their numbers follow on in one
    /// row; a jump in numbering is an aisle.
    pub number: u32,
    pub free: bool,
    pub of_grade: bool,
}

impl<Id> SeatSpot<Id> {
    fn pickable(&self) -> bool {
        self.free && self.of_grade
    }
}

/// The seats to hold, or `None` when fewer than `quantity` are pickable.
pub fn best_available<Id: Copy>(seats: &[SeatSpot<Id>], quantity: usize) -> Option<Vec<Id>> {
    if quantity == 0 || seats.iter().filter(|seat| seat.pickable()).count() < quantity {
        return None;
    }
    let mut hall = Hall::new(seats);
    let picked = match hall.best_block(quantity) {
        Some(block) => vec![block],
        None => hall.split(quantity)?,
    };
    Some(
        picked
            .into_iter()
            .flat_map(|block| {
                hall.rows[block.row][block.start..block.end]
                    .iter()
                    .map(|seat| seat.id)
            })
            .collect(),
    )
}

/// Seats `start..end` of row `row` (indices into the sorted row).
#[derive(Debug, Clone, Copy)]
struct Block {
    row: usize,
    start: usize,
    end: usize,
}

/// The seats in rows, front row first, each row by seat number, with the
/// seats this pick already took marked.
struct Hall<'a, Id> {
    rows: Vec<Vec<&'a SeatSpot<Id>>>,
    taken: Vec<Vec<bool>>,
}

impl<'a, Id> Hall<'a, Id> {
    fn new(seats: &'a [SeatSpot<Id>]) -> Self {
        let mut sorted: Vec<&SeatSpot<Id>> = seats.iter().collect();
        sorted.sort_by(|a, b| {
            natural(a.section.as_deref(), b.section.as_deref())
                .then_with(|| natural(a.row.as_deref(), b.row.as_deref()))
                .then(a.number.cmp(&b.number))
        });
        let mut rows: Vec<Vec<&SeatSpot<Id>>> = Vec::new();
        for seat in sorted {
            match rows.last_mut() {
                Some(row) if row[0].section == seat.section && row[0].row == seat.row => {
                    row.push(seat)
                }
                _ => rows.push(vec![seat]),
            }
        }
        let taken = rows.iter().map(|row| vec![false; row.len()]).collect();
        Self { rows, taken }
    }

    fn pickable(&self, row: usize, seat: usize) -> bool {
        self.rows[row][seat].pickable() && !self.taken[row][seat]
    }

    fn empty(&self, row: usize, seat: usize) -> bool {
        self.rows[row][seat].free && !self.taken[row][seat]
    }

    fn next_to(&self, row: usize, left: usize, right: usize) -> bool {
        self.rows[row][left].number + 1 == self.rows[row][right].number
    }

    /// The runs of pickable seats next to each other, row by row.
    fn runs(&self) -> Vec<Block> {
        let mut runs = Vec::new();
        for (row, seats) in self.rows.iter().enumerate() {
            let mut start = None;
            for seat in 0..=seats.len() {
                let continues = seat < seats.len()
                    && self.pickable(row, seat)
                    && start.is_none_or(|_| self.next_to(row, seat - 1, seat));
                match (start, continues) {
                    (None, true) => start = Some(seat),
                    (Some(first), false) => {
                        runs.push(Block {
                            row,
                            start: first,
                            end: seat,
                        });
                        start = (seat < seats.len() && self.pickable(row, seat)).then_some(seat);
                    }
                    _ => {}
                }
            }
        }
        runs
    }

    /// How many single empty seats taking `block` would leave with a taken
    /// seat on both sides: 0, 1 or 2.
    fn strands(&self, block: Block) -> usize {
        let Block { row, start, end } = block;
        let last = self.rows[row].len();
        let left = start >= 2
            && self.next_to(row, start - 1, start)
            && self.empty(row, start - 1)
            && self.next_to(row, start - 2, start - 1)
            && !self.empty(row, start - 2);
        let right = end + 1 < last
            && self.next_to(row, end - 1, end)
            && self.empty(row, end)
            && self.next_to(row, end, end + 1)
            && !self.empty(row, end + 1);
        usize::from(left) + usize::from(right)
    }

    /// The best place for `quantity` seats together inside the given runs:
    /// fewest stranded seats, then front-most row, then lowest number.
    fn place(&self, runs: &[Block], quantity: usize) -> Option<Block> {
        runs.iter()
            .filter(|run| run.end - run.start >= quantity)
            .flat_map(|run| {
                (run.start..=run.end - quantity).map(move |start| Block {
                    row: run.row,
                    start,
                    end: start + quantity,
                })
            })
            .min_by_key(|block| (self.strands(*block), block.row, block.start))
    }

    fn best_block(&self, quantity: usize) -> Option<Block> {
        self.place(&self.runs(), quantity)
    }

    /// No block holds the whole party: whole runs, largest first, then
    /// the rest placed like a block of its own.
    fn split(&mut self, quantity: usize) -> Option<Vec<Block>> {
        let mut runs = self.runs();
        runs.sort_by_key(|run| (std::cmp::Reverse(run.end - run.start), run.row, run.start));
        let mut picked = Vec::new();
        let mut left = quantity;
        for run in runs {
            let size = run.end - run.start;
            if left == 0 || size > left {
                continue;
            }
            picked.push(run);
            self.take(run);
            left -= size;
        }
        if left > 0 {
            // Every run left is longer than the rest (a shorter one would
            // have been taken whole), and one is left: there were enough
            // pickable seats.
            let rest = self.place(&self.runs(), left)?;
            self.take(rest);
            picked.push(rest);
        }
        Some(picked)
    }

    fn take(&mut self, block: Block) {
        for seat in block.start..block.end {
            self.taken[block.row][seat] = true;
        }
    }
}

/// Row and section labels in the order people read them: "2" before
/// "10", "A" before "B", unlabelled first.
fn natural(a: Option<&str>, b: Option<&str>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(a), Ok(b)) => a.cmp(&b),
            _ => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row drawn as text: `.` free, `x` taken, `o` free but another
    /// grade, ` ` an aisle (the numbering jumps). Seat ids are
    /// `row * 100 + number`.
    fn row(label: &str, layout: &str) -> Vec<SeatSpot<u32>> {
        let row_no = label
            .bytes()
            .next()
            .map_or(0, |b| u32::from(b.saturating_sub(b'A')) + 1);
        layout
            .chars()
            .enumerate()
            .filter(|(_, c)| *c != ' ')
            .map(|(at, c)| {
                let number = u32::try_from(at).unwrap() + 1;
                SeatSpot {
                    id: row_no * 100 + number,
                    section: None,
                    row: Some(label.to_owned()),
                    number,
                    free: c != 'x',
                    of_grade: c == '.',
                }
            })
            .collect()
    }

    fn hall(rows: &[(&str, &str)]) -> Vec<SeatSpot<u32>> {
        rows.iter()
            .flat_map(|(label, layout)| row(label, layout))
            .collect()
    }

    fn pick(rows: &[(&str, &str)], quantity: usize) -> Option<Vec<u32>> {
        best_available(&hall(rows), quantity)
    }

    #[test]
    fn a_party_sits_together_in_the_front_most_row_that_has_room() {
        let seats = [("A", "x.x.x."), ("B", "xx...."), ("C", "......")];
        assert_eq!(pick(&seats, 3), Some(vec![203, 204, 205]));
    }

    #[test]
    fn a_block_that_strands_one_seat_loses_to_one_that_does_not() {
        // Row A: taking 2-3 or 3-4 strands a lone seat; 2-3 in row B does not.
        let seats = [("A", "x...x"), ("B", "x....x")];
        assert_eq!(pick(&seats, 2), Some(vec![202, 203]));
    }

    #[test]
    fn within_a_row_the_pick_slides_to_leave_no_lone_seat() {
        // Taking 2-3 would strand nothing (4-5 stay together); 3-4 would
        // strand seat 2 between taken seat 1 and the party.
        let seats = [("A", "x....x")];
        assert_eq!(pick(&seats, 2), Some(vec![102, 103]));
        let seats = [("A", "x.....x")];
        assert_eq!(pick(&seats, 3), Some(vec![102, 103, 104]));
    }

    #[test]
    fn when_every_choice_strands_a_seat_the_front_most_still_sells() {
        let seats = [("A", "x...x")];
        assert_eq!(pick(&seats, 2), Some(vec![102, 103]));
    }

    #[test]
    fn an_aisle_splits_a_row() {
        let seats = [("A", ".. .."), ("B", "...")];
        assert_eq!(pick(&seats, 3), Some(vec![201, 202, 203]));
        assert_eq!(pick(&seats, 2), Some(vec![101, 102]));
    }

    #[test]
    fn seats_of_another_grade_are_never_picked_but_count_as_empty() {
        // Seat 1 is free but of another grade: taking 2-3 leaves it next
        // to the wall, not between taken seats.
        let seats = [("A", "o..x")];
        assert_eq!(pick(&seats, 2), Some(vec![102, 103]));
        let seats = [("A", "x.o.x")];
        assert_eq!(pick(&seats, 2), Some(vec![102, 104]));
    }

    #[test]
    fn a_party_no_block_holds_is_split_over_the_fewest_blocks() {
        let seats = [("A", "..x..."), ("B", "x.x")];
        // The last seat is the lone one in row B: taking 1 in row A would
        // strand seat 2 there.
        assert_eq!(pick(&seats, 4), Some(vec![104, 105, 106, 202]));
        assert_eq!(pick(&seats, 6), Some(vec![104, 105, 106, 101, 102, 202]));
    }

    #[test]
    fn too_few_seats_pick_nothing() {
        let seats = [("A", "x.x"), ("B", "oo")];
        assert_eq!(pick(&seats, 2), None);
        assert_eq!(pick(&seats, 0), None);
    }

    #[test]
    fn rows_are_read_in_natural_order() {
        let mut seats = row("10", "...");
        seats.extend(row("9", "..."));
        seats.iter_mut().for_each(|seat| {
            seat.id = seat.number + 100 * u32::from(seat.row.as_deref() == Some("10"))
        });
        assert_eq!(best_available(&seats, 2), Some(vec![1, 2]));
    }
}
