package tracker

import "container/heap"

// PartitionOffsets tracks one input partition: which records are still open (their shipment has stages
// pending, or their dead letter is not acknowledged yet) and how far the partition has been read. The
// committable offset is the lowest open offset,
// or one past the highest offset seen when nothing is open — so a crash re-reads exactly the records
// whose shipments were not finished, plus the finished ones after them (harmless: same event ids).
// Offsets may arrive in any order (a partition given back after a rebalance re-reads older records).
type PartitionOffsets struct {
	open map[int64]struct{}
	low  int64Heap // every open offset, plus closed ones not yet popped (lazy deletion)
	next int64     // one past the highest offset seen
	seen bool
}

func newPartitionOffsets() *PartitionOffsets {
	return &PartitionOffsets{open: make(map[int64]struct{})}
}

// Open records that the record at offset has work pending (a shipment's stages, a dead letter in flight).
func (p *PartitionOffsets) Open(offset int64) {
	p.Skip(offset)
	if _, ok := p.open[offset]; !ok {
		p.open[offset] = struct{}{}
		heap.Push(&p.low, offset)
	}
}

// Skip records that the record at offset was read and needs nothing more (declined, duplicate). A record
// that is dead-lettered is Open until its dead letter is acknowledged, never merely skipped.
func (p *PartitionOffsets) Skip(offset int64) {
	if !p.seen || offset+1 > p.next {
		p.next = offset + 1
	}
	p.seen = true
}

// Close records that the work of the record at offset is finished.
func (p *PartitionOffsets) Close(offset int64) {
	delete(p.open, offset)
}

// Pending is how many records of the partition still have work pending.
func (p *PartitionOffsets) Pending() int { return len(p.open) }

// Committable is the offset to commit (the next record to read after a restart), and false when
// nothing has been read yet.
func (p *PartitionOffsets) Committable() (int64, bool) {
	for len(p.low) > 0 {
		if _, ok := p.open[p.low[0]]; ok {
			return p.low[0], true
		}
		heap.Pop(&p.low)
	}
	return p.next, p.seen
}

type int64Heap []int64

func (h int64Heap) Len() int           { return len(h) }
func (h int64Heap) Less(i, j int) bool { return h[i] < h[j] }
func (h int64Heap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *int64Heap) Push(x any)        { *h = append(*h, x.(int64)) }
func (h *int64Heap) Pop() any {
	old := *h
	v := old[len(old)-1]
	*h = old[:len(old)-1]
	return v
}
