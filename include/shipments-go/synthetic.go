package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"mbyn/shipments-go/internal/contract"
	"mbyn/shipments-go/internal/tracker"
)

// syntheticNamespace makes synthetic order ids a function of (seed, sequence number).
var syntheticNamespace = uuid.MustParse("0d8c5d3e-8f0b-4b55-9f5e-6a3c1e2b7a40")

// syntheticOrderID is the n-th order id of a seed, shaped like the generator's ("O-" + 18 characters).
func syntheticOrderID(seed int64, n int) string {
	id := uuid.NewSHA1(syntheticNamespace, []byte(strconv.FormatInt(seed, 10)+"/"+strconv.Itoa(n))).String()
	return "O-" + id[:18]
}

// runSynthetic walks synthesized orders through the stages: no input topic, no offsets. --count
// bounds the shipments (their stages then finish on schedule), --rate paces new orders.
func runSynthetic(cfg Config, stop *Stopper, log *Logger) (Summary, error) {
	var s Summary
	cat, err := contract.Load(cfg.CatalogPath)
	if err != nil {
		return s, fmt.Errorf("%w: %v", errStartup, err)
	}
	validator, err := cat.Validator("shipments")
	if err != nil {
		return s, fmt.Errorf("%w: %v", errStartup, err)
	}
	cl, err := kgo.NewClient(producerOpts(cfg)...)
	if err != nil {
		return s, fmt.Errorf("%w: kafka client: %v", errStartup, err)
	}
	defer cl.Close()
	em := NewEmitter(cl, cfg.TopicPrefix+"shipments", cat, validator, log)
	if err := waitForBroker(cl, cfg, stop, log, 5*time.Minute); err != nil {
		return s, err
	}
	log.Infof("synthetic orders (seed %d) → %s (stage delay %s, at most %d pending)", cfg.Seed, em.topic, cfg.StageDelay, cfg.MaxPending)

	tr := tracker.New(cfg.StageDelay, cfg.MaxPending, cfg.SeenOrders)
	pacer := NewPacer(cfg.Rate, time.Now())
	progress := time.Now().Add(5 * time.Second)
	report := func() {
		log.Infof("%d shipments (%d pending); %s", s.Shipments, tr.Pending(), em.Line())
	}
	for !stop.Stopped() {
		now := time.Now()
		em.Emit(tr.Due(now))
		if !now.Before(progress) {
			report()
			progress = now.Add(5 * time.Second)
		}
		wake, pending := tr.NextDue()
		if cfg.Count > 0 && int(s.Shipments) >= cfg.Count {
			if !pending {
				stop.Stop("count")
				break
			}
			stop.Sleep(wake)
			continue
		}
		if tr.Full() || pacer.Allowed(now) == 0 {
			if !tr.Full() && (!pending || pacer.Next().Before(wake)) {
				wake = pacer.Next()
			}
			stop.Sleep(wake)
			continue
		}
		orderID := syntheticOrderID(cfg.Seed, int(s.Shipments))
		events, _, err := tr.Admit(tracker.Order{OrderID: orderID, TraceID: orderID, AuthorizedAt: now}, now)
		if err != nil {
			return s, err
		}
		pacer.Take(1)
		s.Shipments++
		em.Emit(events)
	}
	events := tr.FastForward(nil)
	s.FastForwarded = int64(len(events))
	em.Emit(events)
	if len(events) > 0 {
		log.Infof("fast-forwarded %d pending stage(s)", len(events))
	}
	err = em.Flush(2 * time.Minute)
	report()
	em.Fill(&s)
	return s, err
}
