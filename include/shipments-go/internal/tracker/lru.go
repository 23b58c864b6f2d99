package tracker

import "container/list"

// SeenOrders remembers the most recent order ids up to a fixed size, evicting the least recently
// seen: a payment repeated within that window gets no second shipment. Older repeats do get one again
// — with the same shipment and event ids, so downstream de-duplication still holds.
type SeenOrders struct {
	size  int
	order *list.List // front = most recent
	index map[string]*list.Element
}

// NewSeenOrders makes an empty LRU of at most size ids (size ≥ 1).
func NewSeenOrders(size int) *SeenOrders {
	if size < 1 {
		size = 1
	}
	return &SeenOrders{size: size, order: list.New(), index: make(map[string]*list.Element)}
}

// Add records id and reports whether it was already known (refreshing its recency either way).
func (s *SeenOrders) Add(id string) bool {
	if el, ok := s.index[id]; ok {
		s.order.MoveToFront(el)
		return true
	}
	s.index[id] = s.order.PushFront(id)
	if s.order.Len() > s.size {
		oldest := s.order.Back()
		s.order.Remove(oldest)
		delete(s.index, oldest.Value.(string))
	}
	return false
}

// Forget drops id, so the next payment for it is processed again (its shipment was abandoned).
func (s *SeenOrders) Forget(id string) {
	if el, ok := s.index[id]; ok {
		s.order.Remove(el)
		delete(s.index, id)
	}
}

// Len is the number of ids remembered.
func (s *SeenOrders) Len() int { return s.order.Len() }
