// Command shipment-tracker is mbyn's Go producer: it turns authorized payments into shipments and
// publishes each shipment's status changes (created → picked → in_transit → delivered) to the
// shipments topic. See README.md for the modes, guarantees and settings.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Source is the envelope's source and the header "source" of every event.
const Source = "shipment-tracker"

// Config is the validated command line and environment.
type Config struct {
	Bootstrap      []string
	TopicPrefix    string
	CatalogPath    string
	Synthetic      bool
	StageDelay     time.Duration
	Count          int
	Rate           float64
	Duration       time.Duration
	MaxPending     int
	SeenOrders     int
	Seed           int64
	CommitInterval time.Duration
	// SASLUser and SASLPassword are set in the secured mode (MBYN_SECURITY=scram): SCRAM-SHA-512.
	SASLUser     string
	SASLPassword string
}

var topicPrefixPattern = regexp.MustCompile(`^[A-Za-z0-9._-]*$`)

// parseConfig reads flags and MBYN_* variables; errors name the flag or variable and what is allowed.
func parseConfig(args []string, getenv func(string) string) (Config, error) {
	var cfg Config
	fs := flag.NewFlagSet(Source, flag.ContinueOnError)
	fs.BoolVar(&cfg.Synthetic, "synthetic", false, "synthesize orders instead of consuming payments (demos, benchmarks)")
	stageDelay := fs.Float64("stage-delay", 3, "seconds between two stages of a shipment (0: all four at once)")
	fs.IntVar(&cfg.Count, "count", 0, "stop after N shipments, letting their stages finish (0: no limit)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "payments read (or orders synthesized) per second (0: as fast as possible)")
	duration := fs.Float64("duration", 0, "stop after S seconds, fast-forwarding pending stages (0: no limit)")
	fs.IntVar(&cfg.MaxPending, "max-pending", 10000, "shipments with stages pending at most (timer queue bound)")
	fs.IntVar(&cfg.SeenOrders, "seen-orders", 100000, "order ids remembered to ignore duplicate payments (LRU size)")
	fs.Int64Var(&cfg.Seed, "seed", 0, "synthetic mode: seed of the order ids (0: from the clock)")
	commit := fs.Float64("commit-interval", 1, "seconds between offset commits")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	switch {
	case *stageDelay < 0 || *stageDelay > 3600:
		return cfg, fmt.Errorf("--stage-delay must be between 0 and 3600 seconds, got %g", *stageDelay)
	case cfg.Count < 0:
		return cfg, fmt.Errorf("--count must be 0 (no limit) or positive, got %d", cfg.Count)
	case cfg.Rate < 0:
		return cfg, fmt.Errorf("--rate must be 0 (no limit) or positive, got %g", cfg.Rate)
	case *duration < 0:
		return cfg, fmt.Errorf("--duration must be 0 (no limit) or positive, got %g", *duration)
	case cfg.MaxPending < 1:
		return cfg, fmt.Errorf("--max-pending must be at least 1, got %d", cfg.MaxPending)
	case cfg.SeenOrders < 1:
		return cfg, fmt.Errorf("--seen-orders must be at least 1, got %d", cfg.SeenOrders)
	case *commit <= 0:
		return cfg, fmt.Errorf("--commit-interval must be positive, got %g", *commit)
	}
	cfg.StageDelay = seconds(*stageDelay)
	cfg.Duration = seconds(*duration)
	cfg.CommitInterval = seconds(*commit)
	if cfg.Seed == 0 {
		cfg.Seed = time.Now().UnixNano()
	}

	bootstrap := strings.TrimSpace(getenv("MBYN_BOOTSTRAP_SERVERS"))
	if bootstrap == "" {
		bootstrap = "127.0.0.1:9092"
	}
	for _, hp := range strings.Split(bootstrap, ",") {
		hp = strings.TrimSpace(hp)
		host, port, ok := strings.Cut(hp, ":")
		if !ok || host == "" || port == "" {
			return cfg, fmt.Errorf("MBYN_BOOTSTRAP_SERVERS: expected host:port[,host:port...], got %q", bootstrap)
		}
		cfg.Bootstrap = append(cfg.Bootstrap, hp)
	}
	cfg.TopicPrefix = getenv("MBYN_TOPIC_PREFIX")
	if !topicPrefixPattern.MatchString(cfg.TopicPrefix) {
		return cfg, fmt.Errorf("MBYN_TOPIC_PREFIX: only letters, digits, '.', '_' and '-' are allowed, got %q", cfg.TopicPrefix)
	}
	cfg.CatalogPath = getenv("MBYN_CATALOG")
	if cfg.CatalogPath == "" {
		cfg.CatalogPath = defaultCatalog()
	}
	switch security := strings.TrimSpace(getenv("MBYN_SECURITY")); security {
	case "", "open":
	case "scram":
		cfg.SASLUser = strings.TrimSpace(getenv("MBYN_KAFKA_USERNAME"))
		cfg.SASLPassword = getenv("MBYN_KAFKA_PASSWORD")
		if cfg.SASLUser == "" || cfg.SASLPassword == "" {
			return cfg, fmt.Errorf("MBYN_SECURITY=scram needs MBYN_KAFKA_USERNAME and MBYN_KAFKA_PASSWORD (the SCRAM user of this service and its password)")
		}
	default:
		return cfg, fmt.Errorf("MBYN_SECURITY: open or scram, got %q", security)
	}
	return cfg, nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// defaultCatalog is include/topics.yaml seen from the binary (include/shipments-go/bin/), else from
// the working directory.
func defaultCatalog() string {
	if exe, err := os.Executable(); err == nil {
		candidate := filepath.Join(filepath.Dir(exe), "..", "..", "topics.yaml")
		if _, err := os.Stat(candidate); err == nil {
			return filepath.Clean(candidate)
		}
	}
	return filepath.Join("include", "topics.yaml")
}

// Summary is the one JSON line printed on stdout at exit.
type Summary struct {
	Producer      string  `json:"producer"`
	Sent          int64   `json:"sent"`
	Delivered     int64   `json:"delivered"`
	Failed        int64   `json:"failed"`
	Invalid       int64   `json:"invalid"`
	Shipments     int64   `json:"shipments"`
	FastForwarded int64   `json:"fast_forwarded"`
	Declined      int64   `json:"declined"`
	Duplicates    int64   `json:"duplicates"`
	Malformed     int64   `json:"malformed"`
	DeadLettered  int64   `json:"dead_lettered"`
	Pending       int     `json:"pending"`
	StoppedBy     string  `json:"stopped_by"`
	Seconds       float64 `json:"seconds"`
}

// Stopper is the run's stop signal: a context canceled by SIGTERM/SIGINT, --duration or the code,
// with the first reason kept.
type Stopper struct {
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	reason string
}

func NewStopper() *Stopper {
	ctx, cancel := context.WithCancel(context.Background())
	return &Stopper{ctx: ctx, cancel: cancel}
}

func (s *Stopper) Stop(reason string) {
	s.mu.Lock()
	if s.reason == "" {
		s.reason = reason
	}
	s.mu.Unlock()
	s.cancel()
}

func (s *Stopper) Context() context.Context { return s.ctx }
func (s *Stopper) Stopped() bool            { return s.ctx.Err() != nil }

func (s *Stopper) Reason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

// Sleep waits until t or the stop, whichever comes first.
func (s *Stopper) Sleep(until time.Time) {
	d := time.Until(until)
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-s.ctx.Done():
	}
}

// handleSignals stops the run on the first SIGTERM/SIGINT; a second one exits at once (code 130).
func handleSignals(stop *Stopper, log *Logger) {
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		first := <-ch
		name := signalName(first)
		log.Infof("%s: stopping: no more input, fast-forwarding pending stages", name)
		stop.Stop(name)
		second := <-ch
		log.Errorf("%s again: exiting now without flushing", signalName(second))
		os.Exit(130)
	}()
}

func signalName(s os.Signal) string {
	if s == syscall.SIGTERM {
		return "SIGTERM"
	}
	return "SIGINT"
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	log := NewLogger(os.Stderr, Source)
	cfg, err := parseConfig(args, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		log.Errorf("%v", err)
		return 2
	}
	stop := NewStopper()
	handleSignals(stop, log)
	if cfg.Duration > 0 {
		time.AfterFunc(cfg.Duration, func() { stop.Stop("duration") })
	}
	started := time.Now()
	var summary Summary
	if cfg.Synthetic {
		summary, err = runSynthetic(cfg, stop, log)
	} else {
		summary, err = runConsume(cfg, stop, log)
	}
	if errors.Is(err, errStartup) {
		log.Errorf("%v", err)
		return 2
	}
	summary.Producer = Source
	summary.StoppedBy = stop.Reason()
	summary.Seconds = float64(time.Since(started).Milliseconds()) / 1000
	if err != nil {
		log.Errorf("%v", err)
		if summary.StoppedBy == "" {
			summary.StoppedBy = "error"
		}
	}
	line, _ := json.Marshal(summary)
	fmt.Fprintln(os.Stdout, string(line))
	if err != nil || summary.Failed > 0 {
		return 1
	}
	return 0
}
