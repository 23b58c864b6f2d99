package tracker

import (
	"regexp"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func order(id string, partition int32, offset int64) Order {
	return Order{OrderID: id, TraceID: "trace-" + id, AuthorizedAt: t0, Source: &Position{Partition: partition, Offset: offset}}
}

func stagesOf(events []Event) []Stage {
	out := make([]Stage, len(events))
	for i, e := range events {
		out[i] = e.Stage
	}
	return out
}

func mustAdmit(t *testing.T, tr *Tracker, o Order, now time.Time) []Event {
	t.Helper()
	events, dup, err := tr.Admit(o, now)
	if err != nil || dup {
		t.Fatalf("admit %s: dup=%v err=%v", o.OrderID, dup, err)
	}
	return events
}

func TestShipmentWalksFourStagesSpacedByTheDelay(t *testing.T) {
	tr := New(2*time.Second, 10, 10)
	events := mustAdmit(t, tr, order("O-1", 0, 5), t0)
	if len(events) != 1 || events[0].Stage != Created {
		t.Fatalf("admit should emit only created, got %v", stagesOf(events))
	}
	if got := tr.Due(t0.Add(1999 * time.Millisecond)); len(got) != 0 {
		t.Fatalf("nothing is due before the delay, got %v", stagesOf(got))
	}
	var all []Event
	all = append(all, events...)
	for i, want := range []Stage{Picked, InTransit, Delivered} {
		got := tr.Due(t0.Add(time.Duration(i+1) * 2 * time.Second))
		if len(got) != 1 || got[0].Stage != want {
			t.Fatalf("step %d: want %v, got %v", i, want, stagesOf(got))
		}
		all = append(all, got...)
	}
	if tr.Pending() != 0 {
		t.Fatalf("delivered shipment still pending")
	}
	for i, e := range all {
		if want := t0.Add(time.Duration(i) * 2 * time.Second); !e.EventTime.Equal(want) {
			t.Errorf("%v: event time %v, want %v (authorized at + stage × delay)", e.Stage, e.EventTime, want)
		}
		if e.ShipmentID != ShipmentID("O-1") || e.OrderID != "O-1" || e.TraceID != "trace-O-1" {
			t.Errorf("wrong identity on %+v", e)
		}
	}
}

func TestLateLoopEmitsEveryOverdueStageInOrder(t *testing.T) {
	tr := New(time.Second, 10, 10)
	mustAdmit(t, tr, order("O-1", 0, 0), t0)
	got := tr.Due(t0.Add(time.Hour))
	if want := []Stage{Picked, InTransit, Delivered}; len(got) != 3 || got[0].Stage != want[0] || got[2].Stage != want[2] {
		t.Fatalf("overdue stages: got %v", stagesOf(got))
	}
}

func TestZeroDelayEmitsAllStagesAtOnce(t *testing.T) {
	tr := New(0, 10, 10)
	events := mustAdmit(t, tr, order("O-1", 3, 7), t0)
	if len(events) != 4 || events[3].Stage != Delivered || tr.Pending() != 0 {
		t.Fatalf("zero delay: got %v, pending %d", stagesOf(events), tr.Pending())
	}
	if off := tr.Uncommitted()[3]; off != 8 {
		t.Fatalf("finished record should be committable past itself: got %d", off)
	}
}

func TestDuplicateOrderGetsNoSecondShipment(t *testing.T) {
	tr := New(time.Second, 10, 10)
	mustAdmit(t, tr, order("O-1", 0, 0), t0)
	events, dup, err := tr.Admit(order("O-1", 0, 1), t0)
	if err != nil || !dup || len(events) != 0 {
		t.Fatalf("duplicate: events=%d dup=%v err=%v", len(events), dup, err)
	}
	if tr.Pending() != 1 {
		t.Fatalf("pending = %d, want 1", tr.Pending())
	}
	// The duplicate's offset is read, but the original still holds the commit back.
	if off := tr.Uncommitted()[0]; off != 0 {
		t.Fatalf("committable %d, want 0 (shipment of offset 0 pending)", off)
	}
}

func TestFullQueueRefusesWithoutSideEffects(t *testing.T) {
	tr := New(time.Second, 2, 10)
	mustAdmit(t, tr, order("O-1", 0, 0), t0)
	mustAdmit(t, tr, order("O-2", 0, 1), t0)
	if _, _, err := tr.Admit(order("O-3", 0, 2), t0); err != ErrFull {
		t.Fatalf("want ErrFull, got %v", err)
	}
	tr.FastForward(nil)
	if _, dup, err := tr.Admit(order("O-3", 0, 2), t0); err != nil || dup {
		t.Fatalf("refused order must be admitted later as new: dup=%v err=%v", dup, err)
	}
}

func TestCommitStopsAtLowestPendingShipment(t *testing.T) {
	tr := New(time.Second, 10, 10)
	mustAdmit(t, tr, order("O-1", 0, 10), t0)
	tr.Skip(Position{Partition: 0, Offset: 11}) // a declined payment
	mustAdmit(t, tr, order("O-2", 0, 12), t0.Add(500*time.Millisecond))
	mustAdmit(t, tr, order("O-3", 1, 4), t0)
	got := tr.Uncommitted()
	if got[0] != 10 || got[1] != 4 {
		t.Fatalf("committable %v, want p0=10 p1=4", got)
	}
	tr.MarkCommitted(got)
	if again := tr.Uncommitted(); len(again) != 0 {
		t.Fatalf("nothing new to commit, got %v", again)
	}
	tr.Due(t0.Add(3 * time.Second)) // O-1 and O-3 delivered, O-2 at in_transit
	got = tr.Uncommitted()
	if got[0] != 12 || got[1] != 5 {
		t.Fatalf("after O-1 and O-3 finished: %v, want p0=12 p1=5", got)
	}
	tr.Due(t0.Add(4 * time.Second))
	if got := tr.Uncommitted(); got[0] != 13 {
		t.Fatalf("all finished: %v, want p0=13", got)
	}
}

func TestFastForwardPartitionsEmitsRemainingStagesOfThosePartitionsOnly(t *testing.T) {
	tr := New(time.Second, 10, 10)
	mustAdmit(t, tr, order("O-1", 0, 0), t0)
	mustAdmit(t, tr, order("O-2", 1, 0), t0)
	mustAdmit(t, tr, order("O-3", 0, 1), t0)
	tr.Due(t0.Add(time.Second)) // everyone picked
	events := tr.FastForwardPartitions([]int32{0})
	if len(events) != 4 {
		t.Fatalf("want in_transit+delivered for two shipments, got %d events", len(events))
	}
	if events[0].OrderID != "O-1" || events[1].OrderID != "O-1" || events[1].Stage != Delivered || events[2].OrderID != "O-3" {
		t.Fatalf("fast-forward must go shipment by shipment in admission order: %+v", events)
	}
	if tr.Pending() != 1 {
		t.Fatalf("partition 1's shipment must stay pending, pending=%d", tr.Pending())
	}
	if got := tr.Uncommitted()[0]; got != 2 {
		t.Fatalf("partition 0 committable %d, want 2", got)
	}
}

func TestDropForgetsOrdersSoTheyAreProcessedAgain(t *testing.T) {
	tr := New(time.Second, 10, 10)
	mustAdmit(t, tr, order("O-1", 2, 0), t0)
	if n := tr.Drop([]int32{2}); n != 1 || tr.Pending() != 0 {
		t.Fatalf("drop: n=%d pending=%d", n, tr.Pending())
	}
	if _, ok := tr.Uncommitted()[2]; ok {
		t.Fatalf("lost partition must have nothing to commit")
	}
	if _, dup, _ := tr.Admit(order("O-1", 2, 0), t0); dup {
		t.Fatalf("a dropped shipment's order must not count as a duplicate when re-read")
	}
}

func TestIdsAreDeterministic(t *testing.T) {
	id := ShipmentID("O-abc")
	if id != ShipmentID("O-abc") || id == ShipmentID("O-abd") {
		t.Fatalf("shipment id must be a function of the order id")
	}
	if !regexp.MustCompile(`^S-[0-9a-f]{16}$`).MatchString(id) {
		t.Fatalf("shipment id %q", id)
	}
	uuidRe := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for _, s := range Stages {
		e := EventID(id, s)
		if !uuidRe.MatchString(e) || e != EventID(id, s) || seen[e] {
			t.Fatalf("event id %q for %v: want a stable, distinct UUID v5", e, s)
		}
		seen[e] = true
	}
	if CarrierFor("O-abc") != CarrierFor("O-abc") {
		t.Fatalf("carrier must be deterministic")
	}
}

func TestReplayProducesIdenticalEvents(t *testing.T) {
	run := func() []Event {
		tr := New(time.Second, 10, 10)
		events := mustAdmit(t, tr, order("O-9", 0, 0), t0.Add(time.Minute)) // admitted at another wall time
		return append(events, tr.FastForward(nil)...)
	}
	a, b := run(), run()
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("replay differs at %d: %+v vs %+v", i, a[i], b[i])
		}
	}
}

func TestHeldRecordBlocksTheCommitUntilSettled(t *testing.T) {
	tr := New(0, 10, 10)
	tr.Skip(Position{Partition: 0, Offset: 0})
	tr.Hold(Position{Partition: 0, Offset: 1}) // a dead letter in flight
	mustAdmit(t, tr, order("O-1", 0, 2), t0)   // finished at once (delay 0)
	if got := tr.Uncommitted()[0]; got != 1 {
		t.Fatalf("committable %d, want 1: nothing past an unacknowledged dead letter", got)
	}
	tr.MarkCommitted(map[int32]int64{0: 1})
	tr.Settle(Position{Partition: 0, Offset: 1})
	if got := tr.Uncommitted()[0]; got != 3 {
		t.Fatalf("committable %d after the ack, want 3", got)
	}
	tr.Release([]int32{0})
	tr.Settle(Position{Partition: 0, Offset: 7}) // an ack after the partition was released
	if len(tr.Uncommitted()) != 0 {
		t.Fatalf("a late ack must not bring a released partition back: %v", tr.Uncommitted())
	}
}
