package main

import (
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseConfigDefaultsAndEnv(t *testing.T) {
	cfg, err := parseConfig([]string{"--stage-delay", "0.2", "--count", "5"},
		env(map[string]string{"MBYN_BOOTSTRAP_SERVERS": "127.0.0.1:1,127.0.0.1:2", "MBYN_TOPIC_PREFIX": "t1-",
			"MBYN_CATALOG": "/x/topics.yaml"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StageDelay != 200*time.Millisecond || cfg.Count != 5 || len(cfg.Bootstrap) != 2 || cfg.TopicPrefix != "t1-" ||
		cfg.CatalogPath != "/x/topics.yaml" || cfg.MaxPending != 10000 || cfg.Seed == 0 || cfg.Synthetic {
		t.Fatalf("unexpected config %+v", cfg)
	}
}

func TestParseConfigNamesTheBadSetting(t *testing.T) {
	cases := map[string]struct {
		args []string
		env  map[string]string
	}{
		"--stage-delay":          {[]string{"--stage-delay", "-1"}, nil},
		"--max-pending":          {[]string{"--max-pending", "0"}, nil},
		"MBYN_BOOTSTRAP_SERVERS": {nil, map[string]string{"MBYN_BOOTSTRAP_SERVERS": "localhost"}},
		"MBYN_TOPIC_PREFIX":      {nil, map[string]string{"MBYN_TOPIC_PREFIX": "a b"}},
		"MBYN_SECURITY":          {nil, map[string]string{"MBYN_SECURITY": "tls"}},
		"MBYN_KAFKA_PASSWORD":    {nil, map[string]string{"MBYN_SECURITY": "scram", "MBYN_KAFKA_USERNAME": "shipments"}},
	}
	for want, c := range cases {
		_, err := parseConfig(c.args, env(c.env))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v should name it", want, err)
		}
	}
}

func TestParseConfigSecuredModeReadsTheServiceUser(t *testing.T) {
	cfg, err := parseConfig(nil, env(map[string]string{"MBYN_SECURITY": "scram", "MBYN_KAFKA_USERNAME": "shipments",
		"MBYN_KAFKA_PASSWORD": "s3cret"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SASLUser != "shipments" || cfg.SASLPassword != "s3cret" || len(producerOpts(cfg)) != len(producerOpts(Config{}))+1 {
		t.Fatalf("secured config not applied: user %q, %d options", cfg.SASLUser, len(producerOpts(cfg)))
	}
}

func TestPacer(t *testing.T) {
	start := time.Unix(0, 0)
	p := NewPacer(10, start)
	if n := p.Allowed(start); n != 1 {
		t.Fatalf("allowed at start %d, want 1", n)
	}
	p.Take(1)
	if n := p.Allowed(start.Add(50 * time.Millisecond)); n != 0 {
		t.Fatalf("allowed after 50ms %d, want 0", n)
	}
	if next := p.Next(); !next.Equal(start.Add(100 * time.Millisecond)) {
		t.Fatalf("next %v", next)
	}
	if n := p.Allowed(start.Add(time.Second)); n != 10 {
		t.Fatalf("allowed after 1s %d, want 10", n)
	}
	if NewPacer(0, start).Allowed(start) < 1000 {
		t.Fatalf("rate 0 must be unlimited")
	}
}

func TestSyntheticOrderIDs(t *testing.T) {
	a, b := syntheticOrderID(7, 1), syntheticOrderID(7, 2)
	if a == b || a != syntheticOrderID(7, 1) || len(a) != 20 || !strings.HasPrefix(a, "O-") {
		t.Fatalf("ids %q %q", a, b)
	}
}
