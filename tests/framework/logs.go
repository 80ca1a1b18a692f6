package framework

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

// Logs keeps every klog line of the test process (cloudcore and edgecore run in it) while a test runs, and still
// prints them.
type Logs struct {
	mu     sync.Mutex
	all    []string
	errors []string
}

// Lines returns every line so far.
func (c *Logs) Lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.all...)
}

// Errors returns the error lines so far.
func (c *Logs) Errors() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.errors...)
}

func (c *Logs) add(line string, isErr bool) {
	c.mu.Lock()
	c.all = append(c.all, line)
	if isErr {
		c.errors = append(c.errors, line)
	}
	c.mu.Unlock()
	fmt.Fprintln(os.Stderr, line)
}

// CaptureLogs routes klog through a Logs until the test ends.
func CaptureLogs(t testing.TB) *Logs {
	t.Helper()
	c := &Logs{}
	klog.SetLogger(logr.New(&captureSink{c: c}))
	t.Cleanup(func() {
		klog.Flush()
		klog.ClearLogger()
	})
	return c
}

// AllowedError is an error line a healthy run may log, with the reason it may.
type AllowedError struct {
	Pattern *regexp.Regexp
	Reason  string
}

// FailOnErrorLogs captures the process's logs and, when the test ends, fails it for every error line that no
// entry of allow matches: a healthy run logs no error line, so a new one is a failure to explain.
func FailOnErrorLogs(t testing.TB, allow ...AllowedError) *Logs {
	t.Helper()
	c := CaptureLogs(t)
	t.Cleanup(func() {
		for _, line := range c.Errors() {
			allowed := false
			for _, a := range allow {
				if a.Pattern.MatchString(line) {
					allowed = true
					break
				}
			}
			if !allowed {
				t.Errorf("error logged in a healthy run: %s", line)
			}
		}
	})
	return c
}

type captureSink struct {
	c      *Logs
	name   string
	values []any
}

func (s *captureSink) Init(logr.RuntimeInfo)  {}
func (s *captureSink) Enabled(level int) bool { return level <= 2 }
func (s *captureSink) Info(level int, msg string, kv ...any) {
	s.c.add(fmt.Sprintf("I %s%q %s", s.prefix(), msg, s.kv(kv)), false)
}
func (s *captureSink) Error(err error, msg string, kv ...any) {
	s.c.add(fmt.Sprintf("E %s%q err=%q %s", s.prefix(), msg, fmt.Sprint(err), s.kv(kv)), true)
}
func (s *captureSink) WithValues(kv ...any) logr.LogSink {
	n := *s
	n.values = append(append([]any(nil), s.values...), kv...)
	return &n
}
func (s *captureSink) WithName(name string) logr.LogSink {
	n := *s
	n.name = strings.Trim(s.name+"/"+name, "/")
	return &n
}
func (s *captureSink) prefix() string {
	if s.name == "" {
		return ""
	}
	return s.name + ": "
}
func (s *captureSink) kv(kv []any) string {
	all := append(append([]any(nil), s.values...), kv...)
	var b strings.Builder
	for i := 0; i+1 < len(all); i += 2 {
		fmt.Fprintf(&b, "%v=%v ", all[i], all[i+1])
	}
	return strings.TrimSpace(b.String())
}
