package servicebus

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// maxURLLen bounds allow-list entries and targets; longer ones are junk.
const maxURLLen = 2048

// allowList holds the target URLs the cloud allow-listed with "start". An
// entry that parses as an absolute URL also admits every URL below it
// (same scheme and host, path under the entry's path); any other entry
// admits exactly itself, as KubeEdge's target_urls lookup does.
type allowList struct {
	mu   sync.RWMutex
	urls map[string]*url.URL // nil value: not an absolute URL
}

func newAllowList() *allowList {
	return &allowList{urls: make(map[string]*url.URL)}
}

func checkEntry(raw string) error {
	switch {
	case raw == "":
		return errors.New("empty url")
	case len(raw) > maxURLLen:
		return fmt.Errorf("url longer than %d bytes", maxURLLen)
	case !utf8.ValidString(raw) || strings.ContainsAny(raw, "\x00\r\n"):
		return fmt.Errorf("url %q has invalid characters", raw)
	}
	return nil
}

// add reports whether raw was new.
func (a *allowList) add(raw string) bool {
	var parsed *url.URL
	if u, err := url.Parse(raw); err == nil && u.IsAbs() && u.Host != "" {
		parsed = u
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.urls[raw]; ok {
		return false
	}
	a.urls[raw] = parsed
	return true
}

func (a *allowList) remove(raw string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.urls, raw)
}

func (a *allowList) len() int {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return len(a.urls)
}

func (a *allowList) list() []string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make([]string, 0, len(a.urls))
	for u := range a.urls {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// permits reports whether raw is allow-listed.
func (a *allowList) permits(raw string) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if _, ok := a.urls[raw]; ok {
		return true
	}
	target, err := url.Parse(raw)
	if err != nil || !target.IsAbs() {
		return false
	}
	for _, e := range a.urls {
		if e != nil && under(target, e) {
			return true
		}
	}
	return false
}

// under reports whether target is entry or below it. Paths are compared
// by segment, so /api admits /api/v1 but not /apiv1.
func under(target, entry *url.URL) bool {
	if !strings.EqualFold(target.Scheme, entry.Scheme) || !strings.EqualFold(hostPort(target), hostPort(entry)) {
		return false
	}
	base := strings.TrimSuffix(entry.EscapedPath(), "/")
	p := target.EscapedPath()
	return base == "" || p == base || strings.HasPrefix(p, base+"/")
}

// hostPort spells out the scheme's default port, so http://h and
// http://h:80 are the same host.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch strings.ToLower(u.Scheme) {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// isLoopback reports whether host names this machine: local apps listen
// there, and only there may the cloud call without an allow-list entry.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// target resolves where a cloud request goes. resource is KubeEdge's
// "{port}:{path}" for the local app on that port, or an absolute URL;
// when resource is empty, the request's own url is used.
func (a *allowList) target(resource, requestURL string) (*url.URL, error) {
	raw := resource
	if raw == "" {
		raw = requestURL
	}
	if err := checkEntry(raw); err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	var u *url.URL
	if strings.Contains(raw, "://") {
		var err error
		if u, err = url.Parse(raw); err != nil {
			return nil, fmt.Errorf("target %q: %w", raw, err)
		}
		if s := strings.ToLower(u.Scheme); (s != "http" && s != "https") || u.Host == "" {
			return nil, fmt.Errorf("target %q: want an http or https URL", raw)
		}
	} else {
		port, path, ok := strings.Cut(raw, ":")
		n, err := strconv.Atoi(port)
		if !ok || err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("target %q: want {port}:{path} or an absolute URL", raw)
		}
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		if u, err = url.Parse("http://127.0.0.1:" + port + path); err != nil {
			return nil, fmt.Errorf("target %q: %w", raw, err)
		}
	}
	if u.User != nil {
		return nil, fmt.Errorf("target %q: credentials in URLs are not accepted", raw)
	}
	if !isLoopback(u.Hostname()) && !a.permits(u.String()) {
		return nil, fmt.Errorf("target %q: %w", u.Redacted(), errNotAllowed)
	}
	return u, nil
}
