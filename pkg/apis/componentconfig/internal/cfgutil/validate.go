// Package cfgutil holds what the versioned component configs share: field
// validators that report through field.ErrorList, and defaults derived from
// the host. It is internal so that the config types stay the public surface.
package cfgutil

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Port requires a TCP/UDP port a listener can bind or a client can dial.
func Port(p *field.Path, port int32) field.ErrorList {
	if port < 1 || port > 65535 {
		return field.ErrorList{field.Invalid(p, port, "must be between 1 and 65535")}
	}
	return nil
}

// Positive requires counts, intervals and timeouts that only make sense above zero.
func Positive[T int32 | int64](p *field.Path, v T) field.ErrorList {
	if v <= 0 {
		return field.ErrorList{field.Invalid(p, v, "must be greater than 0")}
	}
	return nil
}

// IP requires a literal IP address.
func IP(p *field.Path, s string) field.ErrorList {
	if s == "" {
		return field.ErrorList{field.Required(p, "must be an IP address")}
	}
	if net.ParseIP(s) == nil {
		return field.ErrorList{field.Invalid(p, s, "must be a valid IP address")}
	}
	return nil
}

// Host accepts what a client may dial: an IP address or a DNS name.
func Host(p *field.Path, s string) field.ErrorList {
	if s == "" {
		return field.ErrorList{field.Required(p, "must be an IP address or DNS name")}
	}
	if net.ParseIP(s) != nil || len(utilvalidation.IsDNS1123Subdomain(s)) == 0 {
		return nil
	}
	return field.ErrorList{field.Invalid(p, s, "must be an IP address or a lower-case DNS name")}
}

// HostPort requires "host:port" with a dialable host and a valid port.
func HostPort(p *field.Path, s string) field.ErrorList {
	if s == "" {
		return field.ErrorList{field.Required(p, "must be host:port")}
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return field.ErrorList{field.Invalid(p, s, "must be host:port")}
	}
	if host == "" {
		return field.ErrorList{field.Invalid(p, s, "host must not be empty")}
	}
	if errs := Host(p, host); len(errs) > 0 {
		return field.ErrorList{field.Invalid(p, s, "host must be an IP address or a lower-case DNS name")}
	}
	return portString(p, s, port)
}

// ListenAddress requires "[ip]:port" as a server binds it; an empty host
// means all interfaces.
func ListenAddress(p *field.Path, s string) field.ErrorList {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return field.ErrorList{field.Invalid(p, s, "must be ip:port or :port")}
	}
	if host != "" && net.ParseIP(host) == nil {
		return field.ErrorList{field.Invalid(p, s, "host must be an IP address or empty")}
	}
	return portString(p, s, port)
}

func portString(p *field.Path, whole, port string) field.ErrorList {
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return field.ErrorList{field.Invalid(p, whole, "port must be between 1 and 65535")}
	}
	return nil
}

// URL requires an absolute URL with one of schemes and a host; a port, if
// given, must be valid.
func URL(p *field.Path, s string, schemes ...string) field.ErrorList {
	want := "must be a URL with scheme " + schemes[len(schemes)-1]
	if n := len(schemes); n > 1 {
		want = "must be a URL with scheme " + strings.Join(schemes[:n-1], ", ") + " or " + schemes[n-1]
	}
	if s == "" {
		return field.ErrorList{field.Required(p, want)}
	}
	u, err := url.Parse(s)
	if err != nil || !slices.Contains(schemes, u.Scheme) {
		return field.ErrorList{field.Invalid(p, s, want)}
	}
	if u.Hostname() == "" {
		return field.ErrorList{field.Invalid(p, s, "must include a host")}
	}
	if port := u.Port(); port != "" {
		return portString(p, s, port)
	}
	if strings.HasSuffix(u.Host, ":") {
		return field.ErrorList{field.Invalid(p, s, "port must be between 1 and 65535")}
	}
	return nil
}

// UnixSocket requires unix:///absolute/path, the form CRI and our local
// servers use.
func UnixSocket(p *field.Path, s string) field.ErrorList {
	const scheme = "unix://"
	if s == "" {
		return field.ErrorList{field.Required(p, "must be a unix:///absolute/path socket address")}
	}
	path, ok := strings.CutPrefix(s, scheme)
	if !ok || !filepath.IsAbs(path) {
		return field.ErrorList{field.Invalid(p, s, "must be a unix:///absolute/path socket address")}
	}
	return filePath(p, s, path)
}

// File requires an absolute path to a file. The file itself need not exist
// yet (certificates and databases are created on first start), but a path
// that can never work — a directory, or a parent that is a regular file — is
// reported now rather than at the first write.
func File(p *field.Path, s string) field.ErrorList {
	if s == "" {
		return field.ErrorList{field.Required(p, "must be an absolute file path")}
	}
	if !filepath.IsAbs(s) {
		return field.ErrorList{field.Invalid(p, s, "must be an absolute path")}
	}
	return filePath(p, s, s)
}

// Dir requires an absolute path that is a directory if it exists.
func Dir(p *field.Path, s string) field.ErrorList {
	if s == "" {
		return field.ErrorList{field.Required(p, "must be an absolute directory path")}
	}
	if !filepath.IsAbs(s) {
		return field.ErrorList{field.Invalid(p, s, "must be an absolute path")}
	}
	if fi, err := os.Stat(s); err == nil && !fi.IsDir() {
		return field.ErrorList{field.Invalid(p, s, "exists and is not a directory")}
	}
	return nil
}

func filePath(p *field.Path, value, path string) field.ErrorList {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return field.ErrorList{field.Invalid(p, value, "is a directory, expected a file")}
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return field.ErrorList{field.Invalid(p, value, fmt.Sprintf("parent %s is not a directory", dir))}
	}
	return nil
}

// DNSSubdomain requires an RFC 1123 subdomain, which is what Kubernetes
// accepts as a node or object name.
func DNSSubdomain(p *field.Path, s string) field.ErrorList {
	if s == "" {
		return field.ErrorList{field.Required(p, "must be a lower-case RFC 1123 subdomain")}
	}
	var errs field.ErrorList
	for _, msg := range utilvalidation.IsDNS1123Subdomain(s) {
		errs = append(errs, field.Invalid(p, s, msg))
	}
	return errs
}

// DNSLabel requires an RFC 1123 label, e.g. a namespace name.
func DNSLabel(p *field.Path, s string) field.ErrorList {
	if s == "" {
		return field.ErrorList{field.Required(p, "must be a lower-case RFC 1123 label")}
	}
	var errs field.ErrorList
	for _, msg := range utilvalidation.IsDNS1123Label(s) {
		errs = append(errs, field.Invalid(p, s, msg))
	}
	return errs
}

// Labels requires valid Kubernetes label keys and values.
func Labels(p *field.Path, labels map[string]string) field.ErrorList {
	var errs field.ErrorList
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		for _, msg := range utilvalidation.IsQualifiedName(k) {
			errs = append(errs, field.Invalid(p.Key(k), k, "label key: "+msg))
		}
		for _, msg := range utilvalidation.IsValidLabelValue(labels[k]) {
			errs = append(errs, field.Invalid(p.Key(k), labels[k], "label value: "+msg))
		}
	}
	return errs
}

// Required reports a nil section. Load never produces one (missing and null
// sections keep their defaults), so this only fires for configs built in code.
func Required[T any](p *field.Path, v *T) field.ErrorList {
	if v == nil {
		return field.ErrorList{field.Required(p, "section must be set")}
	}
	return nil
}
