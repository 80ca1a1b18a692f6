package cfgutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestValidators(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p := field.NewPath("f")
	tests := []struct {
		name string
		errs field.ErrorList
		want string // "" means valid
	}{
		{"port ok", Port(p, 65535), ""},
		{"port zero", Port(p, 0), "f: Invalid value: 0: must be between 1 and 65535"},
		{"port high", Port(p, 65536), "must be between 1 and 65535"},
		{"positive", Positive(p, int32(1)), ""},
		{"not positive", Positive(p, int64(-3)), "f: Invalid value: -3: must be greater than 0"},
		{"ipv4", IP(p, "10.0.0.1"), ""},
		{"ipv6", IP(p, "fd00::1"), ""},
		{"ip empty", IP(p, ""), "f: Required value"},
		{"ip bad", IP(p, "10.0.0.256"), "must be a valid IP address"},
		{"hostport ip", HostPort(p, "10.0.0.1:10000"), ""},
		{"hostport v6", HostPort(p, "[fd00::1]:10000"), ""},
		{"hostport dns", HostPort(p, "cloud.example.com:10000"), ""},
		{"hostport no port", HostPort(p, "cloud.example.com"), "must be host:port"},
		{"hostport no host", HostPort(p, ":10000"), "host must not be empty"},
		{"hostport bad host", HostPort(p, "Cloud_Core:1"), "host must be an IP address or a lower-case DNS name"},
		{"hostport bad port", HostPort(p, "a:http"), "port must be between 1 and 65535"},
		{"listen", ListenAddress(p, "127.0.0.1:9091"), ""},
		{"listen any", ListenAddress(p, ":9091"), ""},
		{"listen name", ListenAddress(p, "localhost:9091"), "host must be an IP address or empty"},
		{"listen port", ListenAddress(p, ":0"), "port must be between 1 and 65535"},
		{"url", URL(p, "https://10.0.0.1:10002", "https"), ""},
		{"url no port", URL(p, "https://cloud.example.com", "https"), ""},
		{"url scheme", URL(p, "http://x", "https"), "must be a URL with scheme https"},
		{"url schemes", URL(p, "ftp://x", "a", "b", "c"), "must be a URL with scheme a, b or c"},
		{"url no host", URL(p, "https:///path", "https"), "must include a host"},
		{"url empty port", URL(p, "https://x:", "https"), "port must be between 1 and 65535"},
		{"url bad port", URL(p, "https://x:0", "https"), "port must be between 1 and 65535"},
		{"unix", UnixSocket(p, "unix:///run/x.sock"), ""},
		{"unix relative", UnixSocket(p, "unix://run/x.sock"), "must be a unix:///absolute/path socket address"},
		{"unix no scheme", UnixSocket(p, "/run/x.sock"), "must be a unix:///absolute/path socket address"},
		{"unix under file", UnixSocket(p, "unix://"+file+"/x.sock"), "is not a directory"},
		{"file absent", File(p, filepath.Join(dir, "new", "ca.crt")), ""},
		{"file exists", File(p, file), ""},
		{"file relative", File(p, "ca.crt"), "must be an absolute path"},
		{"file empty", File(p, ""), "f: Required value"},
		{"file is dir", File(p, dir), "is a directory, expected a file"},
		{"file under file", File(p, filepath.Join(file, "ca.crt")), "parent " + file + " is not a directory"},
		{"dir", Dir(p, dir), ""},
		{"dir is file", Dir(p, file), "exists and is not a directory"},
		{"dir relative", Dir(p, "var/lib"), "must be an absolute path"},
		{"subdomain", DNSSubdomain(p, "edge-1.example"), ""},
		{"subdomain upper", DNSSubdomain(p, "Edge1"), "a lowercase RFC 1123 subdomain"},
		{"label", DNSLabel(p, "kube-system"), ""},
		{"label dot", DNSLabel(p, "a.b"), "must not contain dots"},
		{"label upper", DNSLabel(p, "Default"), "a lowercase RFC 1123 label"},
		{"labels", Labels(p, map[string]string{"node-role.kubernetes.io/edge": ""}), ""},
		{"labels bad value", Labels(p, map[string]string{"k": "not ok"}), "f[k]: Invalid value: \"not ok\": label value"},
		{"required", Required(p, (*struct{})(nil)), "f: Required value: section must be set"},
		{"present", Required(p, &struct{}{}), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ""
			if agg := tt.errs.ToAggregate(); agg != nil {
				got = agg.Error()
			}
			if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestHostDefaults(t *testing.T) {
	if h := Hostname(); h != strings.ToLower(h) {
		t.Errorf("Hostname() = %q, want lower case", h)
	}
	if ip := HostIP(); len(IP(field.NewPath("ip"), ip)) > 0 {
		t.Errorf("HostIP() = %q, not an IP", ip)
	}
}
