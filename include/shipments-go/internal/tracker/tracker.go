package tracker

import (
	"errors"
	"time"
)

// ErrFull is returned by Admit when the timer queue holds its maximum of pending shipments: the caller
// waits for the earliest stage to fall due (back-pressure) instead of growing memory.
var ErrFull = errors.New("tracker: timer queue full")

// Order is an authorized payment that gets a shipment.
type Order struct {
	OrderID      string
	TraceID      string
	AuthorizedAt time.Time
	Source       *Position // nil in synthetic mode
}

// Event is one status change to publish.
type Event struct {
	ShipmentID string
	OrderID    string
	Carrier    string
	TraceID    string
	Stage      Stage
	EventID    string
	EventTime  time.Time
}

// Tracker walks shipments through their stages, spaced by a fixed delay, and keeps the input
// offsets that are safe to commit. It is not safe for concurrent use: callers hold one lock around it.
type Tracker struct {
	delay      time.Duration
	queue      *TimerQueue
	seen       *SeenOrders
	partitions map[int32]*PartitionOffsets
	committed  map[int32]int64
}

// New makes a tracker: stages delay apart, at most maxPending shipments in flight, the last seenSize
// order ids remembered for de-duplication.
func New(delay time.Duration, maxPending, seenSize int) *Tracker {
	return &Tracker{
		delay:      delay,
		queue:      NewTimerQueue(maxPending),
		seen:       NewSeenOrders(seenSize),
		partitions: make(map[int32]*PartitionOffsets),
		committed:  make(map[int32]int64),
	}
}

// Full says whether Admit would refuse a new shipment now.
func (t *Tracker) Full() bool { return t.queue.Full() }

// Pending is the number of shipments with stages still to emit.
func (t *Tracker) Pending() int { return t.queue.Len() }

// NextDue is when the earliest pending stage falls due (false: nothing pending).
func (t *Tracker) NextDue() (time.Time, bool) { return t.queue.NextDue() }

func (t *Tracker) partition(p int32) *PartitionOffsets {
	po, ok := t.partitions[p]
	if !ok {
		po = newPartitionOffsets()
		t.partitions[p] = po
	}
	return po
}

// Skip records an input record that creates no shipment and needs nothing more (declined, duplicate).
func (t *Tracker) Skip(pos Position) { t.partition(pos.Partition).Skip(pos.Offset) }

// Hold records an input record whose outcome is not acknowledged yet (its dead letter is in flight): no
// offset past it becomes committable until Settle.
func (t *Tracker) Hold(pos Position) { t.partition(pos.Partition).Open(pos.Offset) }

// Settle releases a held record (its dead letter was acknowledged). A partition released or dropped
// since is left alone: its next owner reads the record again.
func (t *Tracker) Settle(pos Position) {
	if po, ok := t.partitions[pos.Partition]; ok {
		po.Close(pos.Offset)
	}
}

// Admit creates the shipment of an order and returns its "created" event (all four events when the
// delay is zero). A repeated order within the LRU window returns no events and duplicate=true.
// ErrFull means nothing was recorded: call again once Due has emitted something.
func (t *Tracker) Admit(o Order, now time.Time) (events []Event, duplicate bool, err error) {
	if t.queue.Full() {
		return nil, false, ErrFull
	}
	if t.seen.Add(o.OrderID) {
		if o.Source != nil {
			t.Skip(*o.Source)
		}
		return nil, true, nil
	}
	id := ShipmentID(o.OrderID)
	trace := o.TraceID
	if trace == "" {
		trace = o.OrderID
	}
	s := &Shipment{ID: id, OrderID: o.OrderID, Carrier: CarrierFor(o.OrderID), TraceID: trace,
		AuthorizedAt: o.AuthorizedAt, Next: Created, Source: o.Source}
	if s.Source != nil {
		t.partition(s.Source.Partition).Open(s.Source.Offset)
	}
	events = append(events, t.event(s, Created))
	if t.delay <= 0 {
		for _, stage := range Stages[1:] {
			events = append(events, t.event(s, stage))
		}
		t.finish(s)
		return events, false, nil
	}
	s.Next = Picked
	s.Due = now.Add(t.delay)
	t.queue.push(s)
	return events, false, nil
}

// Due emits every stage due at now, in due order, and re-schedules the shipments that have more.
func (t *Tracker) Due(now time.Time) []Event {
	var events []Event
	for {
		s, ok := t.queue.popDue(now)
		if !ok {
			return events
		}
		events = append(events, t.event(s, s.Next))
		if s.Next.Final() {
			t.finish(s)
			continue
		}
		s.Next++
		s.Due = s.Due.Add(t.delay) // from the previous due time, not now: the spacing stays even
		t.queue.push(s)
	}
}

// FastForward emits at once every remaining stage of the pending shipments that match (nil: all),
// shipment by shipment in admission order, and finishes them (shutdown, partitions revoked).
func (t *Tracker) FastForward(match func(*Shipment) bool) []Event {
	if match == nil {
		match = func(*Shipment) bool { return true }
	}
	var events []Event
	for _, s := range t.queue.removeIf(match) {
		for stage := s.Next; ; stage++ {
			events = append(events, t.event(s, stage))
			if stage.Final() {
				break
			}
		}
		t.finish(s)
	}
	return events
}

// FastForwardPartitions fast-forwards the shipments that came from the given input partitions.
func (t *Tracker) FastForwardPartitions(parts []int32) []Event {
	set := partitionSet(parts)
	return t.FastForward(func(s *Shipment) bool { return s.Source != nil && set[s.Source.Partition] })
}

// Drop abandons the shipments of partitions this member lost (no events, no commit): their orders
// are forgotten by the LRU and the partitions' offsets discarded, so whichever member reads those
// records next creates the shipments again. Returns how many shipments were dropped.
func (t *Tracker) Drop(parts []int32) int {
	set := partitionSet(parts)
	dropped := t.queue.removeIf(func(s *Shipment) bool { return s.Source != nil && set[s.Source.Partition] })
	for _, s := range dropped {
		t.seen.Forget(s.OrderID)
	}
	t.Release(parts)
	return len(dropped)
}

// Release forgets the offsets of partitions no longer assigned (after their final commit).
func (t *Tracker) Release(parts []int32) {
	for _, p := range parts {
		delete(t.partitions, p)
		delete(t.committed, p)
	}
}

// Uncommitted returns, per partition, the committable offset when it differs from the last one
// marked committed; empty when there is nothing new to commit.
func (t *Tracker) Uncommitted() map[int32]int64 {
	out := make(map[int32]int64)
	for p, po := range t.partitions {
		offset, ok := po.Committable()
		if !ok {
			continue
		}
		if last, done := t.committed[p]; done && last == offset {
			continue
		}
		out[p] = offset
	}
	return out
}

// MarkCommitted records offsets the broker accepted.
func (t *Tracker) MarkCommitted(offsets map[int32]int64) {
	for p, o := range offsets {
		if _, assigned := t.partitions[p]; assigned {
			t.committed[p] = o
		}
	}
}

func (t *Tracker) finish(s *Shipment) {
	if s.Source != nil {
		if po, ok := t.partitions[s.Source.Partition]; ok {
			po.Close(s.Source.Offset)
		}
	}
}

func (t *Tracker) event(s *Shipment, stage Stage) Event {
	return Event{ShipmentID: s.ID, OrderID: s.OrderID, Carrier: s.Carrier, TraceID: s.TraceID, Stage: stage,
		EventID: EventID(s.ID, stage), EventTime: s.AuthorizedAt.Add(time.Duration(stage) * t.delay)}
}

func partitionSet(parts []int32) map[int32]bool {
	set := make(map[int32]bool, len(parts))
	for _, p := range parts {
		set[p] = true
	}
	return set
}
