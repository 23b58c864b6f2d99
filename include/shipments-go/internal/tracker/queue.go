package tracker

import (
	"container/heap"
	"time"
)

// Position is where an order came from on the input topic (absent in synthetic mode).
type Position struct {
	Partition int32
	Offset    int64
}

// Shipment is one order's shipment with the stage it emits next and when.
type Shipment struct {
	ID           string
	OrderID      string
	Carrier      string
	TraceID      string
	AuthorizedAt time.Time // event times are AuthorizedAt + stage × delay, so a replay re-sends identical events
	Next         Stage
	Due          time.Time // wall-clock time at which Next is emitted
	Source       *Position // nil in synthetic mode

	seq   uint64 // admission order: breaks ties between equal due times
	index int    // position in the heap
}

// TimerQueue holds the shipments with stages still to emit, earliest due first, up to a fixed capacity.
// It is a binary heap: push and pop are O(log n); removing by predicate is O(n) (rebalances, shutdown).
type TimerQueue struct {
	items    shipmentHeap
	capacity int
	seq      uint64
}

// NewTimerQueue makes an empty queue that holds at most capacity shipments (capacity ≥ 1).
func NewTimerQueue(capacity int) *TimerQueue {
	if capacity < 1 {
		capacity = 1
	}
	return &TimerQueue{capacity: capacity}
}

func (q *TimerQueue) Len() int    { return len(q.items) }
func (q *TimerQueue) Cap() int    { return q.capacity }
func (q *TimerQueue) Full() bool  { return len(q.items) >= q.capacity }
func (q *TimerQueue) Empty() bool { return len(q.items) == 0 }

// push adds a shipment; the caller has checked Full (re-queueing a popped shipment never overflows).
func (q *TimerQueue) push(s *Shipment) {
	q.seq++
	s.seq = q.seq
	heap.Push(&q.items, s)
}

// NextDue is the earliest due time, and false when the queue is empty.
func (q *TimerQueue) NextDue() (time.Time, bool) {
	if len(q.items) == 0 {
		return time.Time{}, false
	}
	return q.items[0].Due, true
}

// popDue removes and returns the earliest shipment if it is due at now.
func (q *TimerQueue) popDue(now time.Time) (*Shipment, bool) {
	if len(q.items) == 0 || q.items[0].Due.After(now) {
		return nil, false
	}
	return heap.Pop(&q.items).(*Shipment), true
}

// removeIf removes and returns every shipment for which match is true, earliest
// admitted first (so fast-forwarded events keep the input order per partition).
func (q *TimerQueue) removeIf(match func(*Shipment) bool) []*Shipment {
	var removed []*Shipment
	kept := q.items[:0]
	for _, s := range q.items {
		if match(s) {
			removed = append(removed, s)
		} else {
			kept = append(kept, s)
		}
	}
	for i := len(kept); i < len(q.items); i++ {
		q.items[i] = nil
	}
	q.items = kept
	for i, s := range q.items {
		s.index = i
	}
	heap.Init(&q.items)
	sortBySeq(removed)
	return removed
}

func sortBySeq(list []*Shipment) {
	for i := 1; i < len(list); i++ { // insertion sort: short lists, already nearly ordered
		for j := i; j > 0 && list[j].seq < list[j-1].seq; j-- {
			list[j], list[j-1] = list[j-1], list[j]
		}
	}
}

type shipmentHeap []*Shipment

func (h shipmentHeap) Len() int { return len(h) }
func (h shipmentHeap) Less(i, j int) bool {
	if h[i].Due.Equal(h[j].Due) {
		return h[i].seq < h[j].seq
	}
	return h[i].Due.Before(h[j].Due)
}
func (h shipmentHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *shipmentHeap) Push(x any) {
	s := x.(*Shipment)
	s.index = len(*h)
	*h = append(*h, s)
}
func (h *shipmentHeap) Pop() any {
	old := *h
	n := len(old)
	s := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	s.index = -1
	return s
}
