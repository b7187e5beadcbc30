"""The README's walk-through, through the Python client generated from
openapi/openapi.json (openapi-python-client), against a live server.

Usage: python3 client_walkthrough.py URL USER_TOKEN OTHER_TOKEN ADMIN_TOKEN
(with the generated `boxoffice_client` package on PYTHONPATH). Exits non-zero
with a message at the first answer that is not what the README says.
"""

import datetime
import sys
import time
import uuid

from boxoffice_client import AuthenticatedClient, Client
from boxoffice_client.api.admin import create_coupon, create_vendor
from boxoffice_client.api.catalog import list_concerts, list_schedules, list_seats
from boxoffice_client.api.coupons import get_coupon_job, issue_coupon, my_coupons, redeem_coupon
from boxoffice_client.api.notifications import list_notifications
from boxoffice_client.api.payments import get_payment, pay
from boxoffice_client.api.queue import enter_queue, queue_status
from boxoffice_client.api.reservations import hold_seat
from boxoffice_client.api.wallet import charge_wallet, get_wallet
from boxoffice_client.models import (
    Charge,
    CouponJobStatus,
    CreateCoupon,
    CreateVendor,
    EnterQueue,
    HoldSeat,
    Pay,
    PaymentStatus,
    Problem,
    QueueState,
    ReservationStatus,
    SeatStatus,
)

url, user_token, other_token, admin_token = sys.argv[1:5]


def fail(what, response):
    sys.exit(f"client walk-through: {what}: {response.status_code} {response.content!r}")


def expect(response, status, what):
    if response.status_code != status:
        fail(what, response)
    return response.parsed


def expect_problem(response, status, code, what):
    parsed = expect(response, status, what)
    if not isinstance(parsed, Problem) or parsed.code != code:
        fail(f"{what}: expected problem {code}", response)
    print(f"  {what}: {status} {code}")


def eventually(what, check, timeout=20.0):
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    sys.exit(f"client walk-through: timed out waiting for {what}")


public = Client(base_url=url)
user = AuthenticatedClient(base_url=url, token=user_token)
other = AuthenticatedClient(base_url=url, token=other_token)
admin = AuthenticatedClient(base_url=url, token=admin_token)

# The catalog, public.
concerts = expect(list_concerts.sync_detailed(client=public), 200, "list concerts")
concert = concerts.items[0].id
schedules = expect(list_schedules.sync_detailed(concert, client=public), 200, "list schedules")
schedule = schedules.items[0].id
print(f"concert {concert}, schedule {schedule}: {schedules.items[0].available_seats} seats free")

# The waiting room: enter, poll until active.
def admitted(client):
    ticket = expect(enter_queue.sync_detailed(client=client, body=EnterQueue(concert_id=concert)), 201, "enter the queue")
    queued = client.with_headers({"X-Queue-Token": ticket.token})

    def active():
        status = expect(queue_status.sync_detailed(client=queued), 200, "poll the queue")
        return status.status == QueueState.ACTIVE

    eventually("admission", active)
    return queued


queued = admitted(user)
print("admitted from the waiting room")

# The seat map (only free VIP seats), then a hold.
page = expect(
    list_seats.sync_detailed(schedule, client=queued, status=SeatStatus.AVAILABLE, grade="VIP", limit=5),
    200,
    "the seat map",
)
seat = page.items[0]
print(f"seat {seat.id} ({seat.grade}, {seat.price} points) is free")

# Points, with an idempotency key: a retry charges once.
key = str(uuid.uuid4())
first = expect(charge_wallet.sync_detailed(client=user, body=Charge(amount=200_000), idempotency_key=key), 201, "charge")
again = expect(charge_wallet.sync_detailed(client=user, body=Charge(amount=200_000), idempotency_key=key), 201, "charge again")
if again.balance != first.balance:
    sys.exit("client walk-through: a retried charge charged twice")
print(f"wallet: {first.balance} points")

held = expect(hold_seat.sync_detailed(client=queued, body=HoldSeat(schedule_id=schedule, seat_id=seat.id)), 201, "hold")
if held.status != ReservationStatus.HELD:
    sys.exit(f"client walk-through: the hold is {held.status}")
print(f"reservation {held.id} held until {held.expires_at}")

# Someone else wants the same seat: 409 seat_unavailable, a typed problem.
other_queued = admitted(other)
expect_problem(
    hold_seat.sync_detailed(client=other_queued, body=HoldSeat(schedule_id=schedule, seat_id=seat.id)),
    409,
    "seat_unavailable",
    "the same seat for someone else",
)

# Pay; the saga confirms.
paid = expect(pay.sync_detailed(client=queued, body=Pay(reservation_id=held.id), idempotency_key=str(uuid.uuid4())), 201, "pay")
print(f"payment {paid.id}: {paid.status.value}")


def confirmed():
    payment = expect(get_payment.sync_detailed(paid.id, client=user), 200, "the payment")
    return payment.status == PaymentStatus.CONFIRMED


eventually("the confirmation", confirmed)
print(f"payment {paid.id}: confirmed")
balance = expect(get_wallet.sync_detailed(client=user), 200, "the wallet").balance
print(f"wallet after paying: {balance} points")

# Coupons: an admin creates a campaign, the user claims one and uses it.
vendor = expect(create_vendor.sync_detailed(client=admin, body=CreateVendor(name="Corner Cafe")), 201, "create a vendor")
now = datetime.datetime.now(datetime.timezone.utc)
campaign = expect(
    create_coupon.sync_detailed(
        client=admin,
        body=CreateCoupon(
            name="Free coffee",
            discount=500,
            quantity=10,
            valid_from=now - datetime.timedelta(minutes=1),
            valid_until=now + datetime.timedelta(days=1),
            vendor_id=vendor.id,
        ),
    ),
    201,
    "create a coupon campaign",
)
issued = expect(issue_coupon.sync_detailed(campaign.id, client=user), 201, "issue a coupon")
print(f"coupon {campaign.id}: issue number {issued.issue_number}")
expect_problem(issue_coupon.sync_detailed(campaign.id, client=user), 409, "already_issued", "a second coupon")
job = expect(redeem_coupon.sync_detailed(issued.user_coupon_id, client=user), 202, "redeem the coupon")


def finished():
    found = expect(get_coupon_job.sync_detailed(job.job_id, client=user), 200, "the redemption job")
    return found if found.status != CouponJobStatus.PENDING else None


done = eventually("the redemption", finished)
if done.status != CouponJobStatus.SUCCEEDED:
    sys.exit(f"client walk-through: the redemption {done.status}")
print(f"redemption job {job.job_id}: succeeded")
mine = expect(my_coupons.sync_detailed(client=user), 200, "my coupons")
print(f"my coupons: {[c.status.value for c in mine.items]}")
notices = expect(list_notifications.sync_detailed(client=user), 200, "notifications")
print(f"notifications: {[n.kind for n in notices.items]}")

# Errors are problem+json with a stable code.
expect_problem(list_schedules.sync_detailed(999_999, client=public), 404, "not_found", "an unknown concert")
expect_problem(get_wallet.sync_detailed(client=Client(base_url=url)), 401, "unauthorized", "no token")
print("client walk-through: PASSED")
