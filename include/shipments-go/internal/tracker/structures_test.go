package tracker

import (
	"testing"
	"time"
)

func TestPartitionOffsetsOutOfOrder(t *testing.T) {
	p := newPartitionOffsets()
	if _, ok := p.Committable(); ok {
		t.Fatalf("nothing read: nothing to commit")
	}
	p.Open(20)
	p.Skip(21)
	p.Open(5) // an older record re-read after the partition came back
	if o, _ := p.Committable(); o != 5 {
		t.Fatalf("committable %d, want 5", o)
	}
	p.Close(5)
	if o, _ := p.Committable(); o != 20 {
		t.Fatalf("committable %d, want 20", o)
	}
	p.Close(20)
	if o, _ := p.Committable(); o != 22 {
		t.Fatalf("committable %d, want 22", o)
	}
	if p.Pending() != 0 {
		t.Fatalf("pending %d", p.Pending())
	}
}

func TestSeenOrdersEvictsLeastRecent(t *testing.T) {
	s := NewSeenOrders(2)
	if s.Add("a") || s.Add("b") {
		t.Fatalf("new ids reported as seen")
	}
	if !s.Add("a") { // refreshes a: b is now the oldest
		t.Fatalf("a should be known")
	}
	s.Add("c")
	if s.Len() != 2 {
		t.Fatalf("len %d, want 2", s.Len())
	}
	if s.Add("b") {
		t.Fatalf("b should have been evicted")
	}
	if !s.Add("c") {
		t.Fatalf("c should be known")
	}
}

func TestTimerQueueOrdersByDueThenAdmission(t *testing.T) {
	q := NewTimerQueue(10)
	for i, d := range []int{3, 1, 2, 1} {
		q.push(&Shipment{OrderID: string(rune('a' + i)), Due: t0.Add(time.Duration(d) * time.Second)})
	}
	var order string
	for {
		s, ok := q.popDue(t0.Add(time.Hour))
		if !ok {
			break
		}
		order += s.OrderID
	}
	if order != "bdca" {
		t.Fatalf("pop order %q, want bdca", order)
	}
	if !q.Empty() {
		t.Fatalf("queue not empty")
	}
}
