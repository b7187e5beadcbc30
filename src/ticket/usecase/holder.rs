//! What a holder reads: their tickets, one ticket, its QR image, and the
//! keys anyone verifies codes with.

use crate::{
    kernel::{Page, PageRequest, TicketId, UserId},
    ticket::{
        domain::{MAX_PAGE, PublicKey, QrFormat, Ticket, TicketError},
        ports::{QrImages, TicketCodes, TicketPorts, TicketRepository},
        usecase::TicketService,
    },
};

impl<P: TicketPorts> TicketService<P> {
    /// The holder's ticket; someone else's is not found (ids cannot be
    /// probed).
    pub async fn get(&self, id: TicketId, holder: UserId) -> Result<Ticket, TicketError> {
        match self.tickets.get(id).await? {
            Some(ticket) if ticket.holder == holder => Ok(ticket),
            _ => Err(TicketError::NotFound(id)),
        }
    }

    /// A page of the holder's tickets, newest first.
    pub async fn mine(
        &self,
        holder: UserId,
        asked: PageRequest,
    ) -> Result<Page<Ticket>, TicketError> {
        let read = |page| self.tickets.of_holder(holder, page);
        asked.read(MAX_PAGE, read, |t| t.id.value()).await
    }

    /// The holder's valid ticket's code as a QR image.
    pub async fn qr(
        &self,
        id: TicketId,
        holder: UserId,
        format: QrFormat,
    ) -> Result<Vec<u8>, TicketError> {
        let ticket = self.get(id, holder).await?;
        Ok(self.qr.draw(ticket.admitting_code()?, format)?)
    }

    /// Every key a valid code may be signed with, the signing one first.
    pub async fn keys(&self) -> Result<Vec<PublicKey>, TicketError> {
        Ok(self.codes.public_keys().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        kernel::Fault,
        ticket::{
            domain::TicketStatus,
            usecase::fake::{ALICE, BOB, harness},
        },
    };

    #[tokio::test]
    async fn a_holder_sees_their_own_tickets_only() {
        let h = harness();
        let alice = [
            h.issue(ALICE).await,
            h.issue(ALICE).await,
            h.issue(ALICE).await,
        ];
        let bob = h.issue(BOB).await;
        assert_eq!(h.service.get(alice[0], ALICE).await.unwrap().id, alice[0]);
        assert!(matches!(
            h.service.get(bob, ALICE).await,
            Err(TicketError::NotFound(id)) if id == bob
        ));
        assert!(matches!(
            h.service.get(TicketId(999), ALICE).await,
            Err(TicketError::NotFound(_))
        ));

        let first = h
            .service
            .mine(ALICE, PageRequest::asked(None, 2))
            .await
            .unwrap();
        let ids: Vec<_> = first.items.iter().map(|t| t.id).collect();
        assert_eq!(ids, vec![alice[2], alice[1]], "newest first");
        let rest = h
            .service
            .mine(ALICE, PageRequest::asked(first.next_cursor, 2))
            .await
            .unwrap();
        assert_eq!(rest.items.len(), 1);
        assert_eq!(rest.next_cursor, None);
    }

    #[tokio::test]
    async fn a_void_ticket_has_no_qr_and_someone_elses_is_not_found() {
        let h = harness();
        let id = h.issue(ALICE).await;
        let svg = h.service.qr(id, ALICE, QrFormat::Svg).await.unwrap();
        assert!(String::from_utf8(svg).unwrap().contains("<svg"));
        let png = h.service.qr(id, ALICE, QrFormat::Png).await.unwrap();
        assert_eq!(&png[..4], b"\x89PNG");
        assert!(matches!(
            h.service.qr(id, BOB, QrFormat::Svg).await,
            Err(TicketError::NotFound(_))
        ));
        h.void(id);
        assert!(matches!(
            h.service.qr(id, ALICE, QrFormat::Svg).await,
            Err(TicketError::Void(_))
        ));
        assert_eq!(
            h.service.get(id, ALICE).await.unwrap().status,
            TicketStatus::Void,
            "still listed"
        );
    }

    #[tokio::test]
    async fn the_keys_are_the_signers_and_a_store_outage_is_a_fault() {
        let h = harness();
        let keys = h.service.keys().await.unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid, h.codes.signer().current_kid());
        h.down();
        assert!(matches!(
            h.service.mine(ALICE, PageRequest::asked(None, 5)).await,
            Err(TicketError::Fault(Fault::Unavailable(_)))
        ));
    }
}
