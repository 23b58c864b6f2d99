package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"mbyn/shipments-go/internal/contract"
	"mbyn/shipments-go/internal/tracker"
)

// maxPollRecords bounds one poll: processing stays short, so rebalances are never held up long.
const maxPollRecords = 500

// errDelivery stops the consumer: some shipment events or dead letters were not acknowledged, so no
// offset may move past their payments any more; a restart re-reads them from the last commit.
var errDelivery = errors.New("delivery failed")

// consumer is the default mode's state. mu guards tracker and assigned: the main loop and the group's
// rebalance callbacks both touch them. BlockRebalanceOnPoll keeps callbacks out of record processing;
// the lock covers the moments between polls (waiting for timers, draining).
type consumer struct {
	cfg      Config
	log      *Logger
	stop     *Stopper
	inTopic  string
	group    string
	payments *contract.Codec
	emitter  *Emitter
	dead     *DeadLetters
	cl       *kgo.Client

	mu       sync.Mutex
	tr       *tracker.Tracker
	assigned map[int32]bool
	summary  Summary
	badInput Every
}

// runConsume is the default mode: payments in, shipments out, see README "Offsets".
func runConsume(cfg Config, stop *Stopper, log *Logger) (Summary, error) {
	cat, err := contract.Load(cfg.CatalogPath)
	if err != nil {
		return Summary{}, fmt.Errorf("%w: %v", errStartup, err)
	}
	shipments, err := cat.Validator("shipments")
	if err != nil {
		return Summary{}, fmt.Errorf("%w: %v", errStartup, err)
	}
	payments, err := cat.Codec("payments")
	if err != nil {
		return Summary{}, fmt.Errorf("%w: %v", errStartup, err)
	}
	c := &consumer{
		cfg: cfg, log: log, stop: stop, inTopic: cfg.TopicPrefix + "payments", payments: payments,
		group:    cfg.TopicPrefix + "shipment-tracker",
		tr:       tracker.New(cfg.StageDelay, cfg.MaxPending, cfg.SeenOrders),
		assigned: make(map[int32]bool),
		badInput: Every{interval: 10 * time.Second},
	}
	deadTopic := cfg.TopicPrefix + "dead-letters"
	opts := append(producerOpts(cfg),
		kgo.ProducerBatchMaxBytesFn(batchMaxBytes(cat, deadTopic)),
		kgo.ConsumerGroup(c.group),
		kgo.ConsumeTopics(c.inTopic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(500*time.Millisecond),
		kgo.OnPartitionsAssigned(c.onAssigned),
		kgo.OnPartitionsRevoked(c.onRevoked),
		kgo.OnPartitionsLost(c.onLost),
	)
	c.cl, err = kgo.NewClient(opts...)
	if err != nil {
		return Summary{}, fmt.Errorf("%w: kafka client: %v", errStartup, err)
	}
	defer closeWithin(c.cl, 10*time.Second, log)
	c.emitter = NewEmitter(c.cl, cfg.TopicPrefix+"shipments", cat, shipments, log)
	c.dead = NewDeadLetters(c.cl, deadTopic, c.group, log)
	if err := waitForBroker(c.cl, cfg, stop, log, 5*time.Minute); err != nil {
		return Summary{}, err
	}
	log.Infof("consuming %s as group %s → %s, unreadable records → %s (stage delay %s, at most %d pending)",
		c.inTopic, c.group, c.emitter.topic, c.dead.topic, cfg.StageDelay, cfg.MaxPending)

	err = c.loop()
	if err == nil {
		err = c.finish()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.summary
	c.emitter.Fill(&s)
	s.DeadLettered = c.dead.delivered.Load()
	s.Failed += c.dead.failed.Load()
	s.Pending = c.tr.Pending()
	return s, err
}

// defaultBatchMaxBytes is franz-go's default record batch limit (about the broker's default 1 MiB).
const defaultBatchMaxBytes = 1_000_012

// batchMaxBytes lets a batch to dead-letters be as large as the catalog allows that topic
// (max.message.bytes): a dead letter is a record of up to the broker's default 1 MiB plus its dlq.*
// headers, and one the client refused would stop the tracker on that record after every restart.
func batchMaxBytes(cat *contract.Catalog, deadTopic string) func(string) int32 {
	limit, ok := cat.MaxMessageBytes("dead-letters")
	if !ok || limit < defaultBatchMaxBytes {
		limit = defaultBatchMaxBytes
	}
	return func(topic string) int32 {
		if topic == deadTopic {
			return limit
		}
		return defaultBatchMaxBytes
	}
}

// loop reads payments until stopped (signal, --duration) or --count shipments were created.
func (c *consumer) loop() error {
	pacer := NewPacer(c.cfg.Rate, time.Now())
	nextCommit := time.Now().Add(c.cfg.CommitInterval)
	progress := time.Now().Add(5 * time.Second)
	for !c.stop.Stopped() {
		now := time.Now()
		c.mu.Lock()
		c.emitter.Emit(c.tr.Due(now))
		free := c.cfg.MaxPending - c.tr.Pending()
		countLeft := c.cfg.Count - int(c.summary.Shipments)
		wake, pending := c.tr.NextDue()
		c.mu.Unlock()
		if c.cfg.Count > 0 && countLeft <= 0 {
			return nil
		}
		if !now.Before(nextCommit) {
			if err := c.commit(nil); err != nil {
				return err
			}
			nextCommit = now.Add(c.cfg.CommitInterval)
		}
		if !now.Before(progress) {
			c.progress()
			progress = now.Add(5 * time.Second)
		}
		if !pending || nextCommit.Before(wake) {
			wake = nextCommit
		}
		limit := min(free, maxPollRecords, pacer.Allowed(now))
		if c.cfg.Count > 0 {
			limit = min(limit, countLeft)
		}
		if limit <= 0 { // timer queue full or rate reached: wait for the next timer or token
			if next := pacer.Next(); free > 0 && next.Before(wake) {
				wake = next
			}
			c.stop.Sleep(wake)
			continue
		}
		ctx, cancel := context.WithDeadline(c.stop.Context(), wake)
		fetches := c.cl.PollRecords(ctx, limit)
		cancel()
		for _, fe := range fetches.Errors() {
			if errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled) {
				continue
			}
			if errors.Is(fe.Err, kgo.ErrClientClosed) {
				return fmt.Errorf("kafka client closed")
			}
			c.log.Warnf("fetch %s[%d]: %v", fe.Topic, fe.Partition, fe.Err)
		}
		c.mu.Lock()
		read := 0
		var admitErr error
		fetches.EachRecord(func(r *kgo.Record) {
			if admitErr == nil && c.assigned[r.Partition] {
				read++
				admitErr = c.process(r)
			}
		})
		c.mu.Unlock()
		pacer.Take(read)
		c.cl.AllowRebalance()
		if admitErr != nil {
			return admitErr
		}
	}
	return nil
}

// process turns one payments record into a shipment, skips it (declined, repeated), or dead-letters
// it when it cannot be read (see contract.Codec.Decode for the reasons). Called with mu held.
func (c *consumer) process(r *kgo.Record) error {
	pos := tracker.Position{Partition: r.Partition, Offset: r.Offset}
	env, err := c.payments.Decode(r.Key, r.Value)
	var p payment
	if err == nil {
		p, err = paymentOf(env)
	}
	if err != nil {
		c.deadLetter(r, pos, err)
		return nil
	}
	if p.eventType != "payment_authorized" || p.status != "authorized" {
		c.summary.Declined++
		c.tr.Skip(pos)
		return nil
	}
	authorizedAt, err := contract.ParseTime(p.eventTime)
	if err != nil {
		authorizedAt = time.Now()
	}
	events, duplicate, err := c.tr.Admit(tracker.Order{OrderID: p.orderID, TraceID: p.traceID,
		AuthorizedAt: authorizedAt, Source: &pos}, time.Now())
	if err != nil { // polls are bounded by the free capacity, so a full queue here is a bug
		return fmt.Errorf("order %s at %s[%d]@%d: %w", p.orderID, r.Topic, r.Partition, r.Offset, err)
	}
	if duplicate {
		c.summary.Duplicates++
		return nil
	}
	c.summary.Shipments++
	c.emitter.Emit(events)
	return nil
}

// deadLetter sends r to dead-letters and holds its position until the broker acknowledged it.
func (c *consumer) deadLetter(r *kgo.Record, pos tracker.Position, err error) {
	c.summary.Malformed++
	reason := contract.ReasonUnexpectedError
	var pe *contract.PoisonError
	if errors.As(err, &pe) {
		reason = pe.Reason
	}
	if ok, skipped := c.badInput.Allow(time.Now()); ok {
		c.log.Warnf("dead-lettering payment at %s[%d]@%d (%s): %s (%d similar lines skipped)",
			r.Topic, r.Partition, r.Offset, reason, contract.Shorten(err.Error(), 300), skipped)
	}
	c.tr.Hold(pos)
	c.dead.Send(r, err)
}

// payment is what the tracker reads of a decoded payments envelope.
type payment struct {
	eventType, eventTime, traceID, orderID, status string
}

// errUnreadable is a decoded envelope without the fields the schema promises (a codec bug): the record
// is dead-lettered as unexpected_error rather than stopping the tracker.
var errUnreadable = errors.New("decoded payment lacks a field the schema requires")

func paymentOf(env map[string]any) (payment, error) {
	var p payment
	payload, ok := env["payload"].(map[string]any)
	if !ok {
		return p, fmt.Errorf("%w: payload", errUnreadable)
	}
	fields := []struct {
		from  map[string]any
		name  string
		into  *string
		where string
	}{
		{env, "event_type", &p.eventType, ""}, {env, "event_time", &p.eventTime, ""},
		{payload, "order_id", &p.orderID, "payload/"}, {payload, "status", &p.status, "payload/"},
	}
	for _, f := range fields {
		if *f.into, ok = f.from[f.name].(string); !ok {
			return p, fmt.Errorf("%w: %s%s", errUnreadable, f.where, f.name)
		}
	}
	p.traceID, _ = env["trace_id"].(string) // optional
	return p, nil
}

// finish ends the run: after --count the pending stages run their course; after a signal or
// --duration they are emitted at once. Then flush and a final commit.
func (c *consumer) finish() error {
	if c.stop.Reason() == "" && c.cfg.Count > 0 {
		c.log.Infof("%d shipments created: waiting for their remaining stages", c.cfg.Count)
		nextCommit := time.Now().Add(c.cfg.CommitInterval)
		for !c.stop.Stopped() {
			c.mu.Lock()
			c.emitter.Emit(c.tr.Due(time.Now()))
			wake, pending := c.tr.NextDue()
			c.mu.Unlock()
			if !pending {
				break
			}
			if !time.Now().Before(nextCommit) {
				if err := c.commit(nil); err != nil {
					return err
				}
				nextCommit = time.Now().Add(c.cfg.CommitInterval)
			}
			c.stop.Sleep(minTime(wake, nextCommit))
		}
		c.stop.Stop("count")
	}
	c.mu.Lock()
	events := c.tr.FastForward(nil)
	c.summary.FastForwarded += int64(len(events))
	c.emitter.Emit(events)
	c.mu.Unlock()
	if len(events) > 0 {
		c.log.Infof("fast-forwarded %d pending stage(s)", len(events))
	}
	err := c.commit(nil)
	c.progress()
	return err
}

// commit flushes the producer and commits, per partition, up to the lowest payment whose shipment
// still has stages pending or whose dead letter is not acknowledged (only: nil = every assigned
// partition). Every record is produced with mu held, so after the flush every shipment event and dead
// letter produced so far is acknowledged (or failed: then nothing is committed any more); the offsets
// are taken after it, once the acknowledged dead letters have released their positions.
func (c *consumer) commit(only []int32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.commitLocked(only)
}

func (c *consumer) commitLocked(only []int32) error {
	if err := c.emitter.Flush(2 * time.Minute); err != nil {
		return err
	}
	if failed := c.emitter.failed.Load(); failed > 0 {
		return fmt.Errorf("%w: %d shipment event(s) not acknowledged (last error: %v); offsets not committed, a restart re-reads them",
			errDelivery, failed, c.emitter.LastError())
	}
	if failed := c.dead.failed.Load(); failed > 0 {
		return fmt.Errorf("%w: %d dead letter(s) not acknowledged by %s (last error: %v); offsets not committed, a restart re-reads them",
			errDelivery, failed, c.dead.topic, c.dead.LastError())
	}
	for _, pos := range c.dead.Acked() {
		c.tr.Settle(pos)
	}
	offsets := c.tr.Uncommitted()
	if only != nil {
		keep := make(map[int32]int64)
		for _, p := range only {
			if o, ok := offsets[p]; ok {
				keep[p] = o
			}
		}
		offsets = keep
	}
	if len(offsets) == 0 {
		return nil
	}
	request := map[string]map[int32]kgo.EpochOffset{c.inTopic: {}}
	for p, o := range offsets {
		request[c.inTopic][p] = kgo.EpochOffset{Epoch: -1, Offset: o}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var commitErr error
	c.cl.CommitOffsetsSync(ctx, request, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			commitErr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil && commitErr == nil {
					commitErr = fmt.Errorf("partition %d: %w", p.Partition, err)
				}
			}
		}
	})
	if commitErr != nil {
		// A rebalance can refuse a commit; the next one (or the revoke callback) covers these offsets.
		c.log.Warnf("offset commit failed, will retry: %v", commitErr)
		return nil
	}
	c.tr.MarkCommitted(offsets)
	return nil
}

func (c *consumer) progress() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log.Infof("%d shipments (%d pending), %d declined, %d duplicates, %d malformed (%d dead letters acknowledged); %s",
		c.summary.Shipments, c.tr.Pending(), c.summary.Declined, c.summary.Duplicates, c.summary.Malformed,
		c.dead.delivered.Load(), c.emitter.Line())
}

func (c *consumer) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range assigned[c.inTopic] {
		c.assigned[p] = true
	}
	if len(assigned[c.inTopic]) > 0 {
		c.log.Infof("assigned %s partitions %v", c.inTopic, assigned[c.inTopic])
	}
}

// onRevoked hands partitions over cleanly: their pending stages are emitted at once and committed,
// so the next owner starts after them.
func (c *consumer) onRevoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	parts := revoked[c.inTopic]
	if len(parts) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	events := c.tr.FastForwardPartitions(parts)
	c.summary.FastForwarded += int64(len(events))
	c.emitter.Emit(events)
	if err := c.commitLocked(parts); err != nil {
		c.log.Errorf("revoking partitions %v: %v", parts, err)
		c.stop.Stop("error")
	}
	c.tr.Release(parts)
	for _, p := range parts {
		delete(c.assigned, p)
	}
	c.log.Infof("revoked %s partitions %v (%d stage(s) fast-forwarded)", c.inTopic, parts, len(events))
}

// onLost drops the lost partitions' shipments without committing: their new owner re-reads them.
func (c *consumer) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	parts := lost[c.inTopic]
	c.mu.Lock()
	defer c.mu.Unlock()
	dropped := c.tr.Drop(parts)
	for _, p := range parts {
		delete(c.assigned, p)
	}
	c.log.Warnf("lost %s partitions %v: %d pending shipment(s) left to their next owner", c.inTopic, parts, dropped)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// closeWithin leaves the group and closes the client, waiting at most limit: leaving waits for a
// rebalance in progress, which can hang until a crashed member's session times out. Everything was
// flushed and committed before, so giving up only leaves this member to time out of the group.
func closeWithin(cl *kgo.Client, limit time.Duration, log *Logger) {
	done := make(chan struct{})
	go func() {
		cl.CloseAllowingRebalance() // the final revoke finds nothing new to commit
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(limit):
		log.Warnf("leaving the consumer group is blocked by a rebalance in progress; exiting after %s without waiting", limit)
	}
}
