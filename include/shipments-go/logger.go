package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// Logger writes one line per message to stderr in the Python side's format
// ("2026-11-25 10:00:00,123 INFO shipment-tracker: ..."), so all of mbyn's logs read alike.
type Logger struct {
	mu   sync.Mutex
	out  io.Writer
	name string
}

func NewLogger(out io.Writer, name string) *Logger { return &Logger{out: out, name: name} }

func (l *Logger) write(level, format string, args ...any) {
	now := time.Now()
	stamp := now.Format("2006-01-02 15:04:05") + fmt.Sprintf(",%03d", now.Nanosecond()/1e6)
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.out, "%s %s %s: %s\n", stamp, level, l.name, fmt.Sprintf(format, args...))
}

func (l *Logger) Infof(format string, args ...any)  { l.write("INFO", format, args...) }
func (l *Logger) Warnf(format string, args ...any)  { l.write("WARNING", format, args...) }
func (l *Logger) Errorf(format string, args ...any) { l.write("ERROR", format, args...) }

// Every limits a repeated log line to one per interval (a flood of bad input stays readable).
type Every struct {
	interval time.Duration
	next     time.Time
	skipped  int
}

// Allow reports whether to log now, and how many lines were skipped since the last one.
func (e *Every) Allow(now time.Time) (bool, int) {
	if now.Before(e.next) {
		e.skipped++
		return false, 0
	}
	e.next = now.Add(e.interval)
	skipped := e.skipped
	e.skipped = 0
	return true, skipped
}
