package cloud

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/tether-edge/tether/pkg/security/certs"
	"github.com/tether-edge/tether/pkg/security/revocation"
	"github.com/tether-edge/tether/pkg/security/token"
)

func caSecret(t *testing.T) (*corev1.Secret, []byte, []byte) {
	t.Helper()
	ca, key, err := certs.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := certs.MarshalKeyDER(key)
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kubeedge", Name: "casecret"},
		Data: map[string][]byte{"cadata": ca.Raw, "cakeydata": keyDER}}, ca.Raw, keyDER
}

func TestGetTokenRejoin(t *testing.T) {
	secret, caDER, keyDER := caSecret(t)
	edge := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge1", Labels: map[string]string{edgeRoleLabel: ""}}}
	kubelet := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker1"}}
	join := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kubeedge", Name: "tokensecret"}, Data: map[string][]byte{"tokendata": []byte("a.b.c.d")}}

	tests := []struct {
		name     string
		objs     []runtime.Object
		args     []string
		wantNode string // bound node of the printed token; "-" for the plain join token
		wantTTL  time.Duration
		wantErr  string
		wantNote string
	}{
		{"plain gettoken unchanged", []runtime.Object{join}, nil, "-", 0, "", ""},
		{"re-join token for an edge node", []runtime.Object{secret, edge}, []string{"--rejoin", "edge1"}, "edge1", time.Hour, "", "it replaces the edge node"},
		{"custom ttl", []runtime.Object{secret, edge}, []string{"--rejoin", "edge1", "--ttl", "10m"}, "edge1", 10 * time.Minute, "", ""},
		{"node that does not exist", []runtime.Object{secret}, []string{"--rejoin", "edge9"}, "edge9", time.Hour, "", "joins as a new node"},
		{"kubelet node", []runtime.Object{secret, kubelet}, []string{"--rejoin", "worker1"}, "", 0, "node worker1 is a kubelet node, not an edge node", ""},
		{"invalid name", []runtime.Object{secret}, []string{"--rejoin", "Edge_1"}, "", 0, `--rejoin "Edge_1" is not a valid node name`, ""},
		{"ttl too long", []runtime.Object{secret, edge}, []string{"--rejoin", "edge1", "--ttl", "720h"}, "", 0, "at most 168h0m0s", ""},
		{"ttl without rejoin", []runtime.Object{join}, []string{"--ttl", "10m"}, "", 0, "--ttl applies to re-join tokens only", ""},
		{"no CA secret", []runtime.Object{edge}, []string{"--rejoin", "edge1"}, "", 0, "no Secret kubeedge/casecret", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := newGetTokenCommand(testEnv(fakeCluster(true, tt.objs...)))
			var out, errOut bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&errOut)
			cmd.SetArgs(tt.args)
			cmd.SilenceUsage, cmd.SilenceErrors = true, true
			before := time.Now()
			err := cmd.ExecuteContext(context.Background())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tok := strings.TrimSpace(out.String())
			if tt.wantNode == "-" {
				if tok != "a.b.c.d" {
					t.Errorf("printed %q, want the join token", tok)
				}
				return
			}
			if err := token.VerifyCAHash(tok, caDER); err != nil {
				t.Fatal(err)
			}
			_, jwtPart, _ := token.Parse(tok)
			claims, err := token.VerifyClaims(jwtPart, keyDER, time.Now())
			if err != nil || claims.Node != tt.wantNode {
				t.Fatalf("claims = %+v, %v; want node %q", claims, err, tt.wantNode)
			}
			if exp := claims.ExpiresAt.Time; exp.Before(before.Add(tt.wantTTL).Add(-time.Second)) || exp.After(time.Now().Add(tt.wantTTL)) {
				t.Errorf("expires %v, want in %v", exp, tt.wantTTL)
			}
			if !strings.Contains(errOut.String(), tt.wantNote) {
				t.Errorf("stderr %q lacks %q", errOut.String(), tt.wantNote)
			}
		})
	}
}

func TestRevoke(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubeedge"}}
	tests := []struct {
		name    string
		args    []string
		wantOut string
		wantErr string
		check   func(t *testing.T, l revocation.List)
	}{
		{"node", []string{"edge1"}, "certificates of node edge1 issued before", "", func(t *testing.T, l revocation.List) {
			f, ok := l.Nodes["edge1"]
			if !ok || f.Reason != revocation.ReasonKeadm || time.Since(f.Before) > time.Minute {
				t.Errorf("floor = %+v", f)
			}
		}},
		{"node with a reason", []string{"edge1", "--reason", "stolen"}, "keadm gettoken --rejoin edge1", "", func(t *testing.T, l revocation.List) {
			if l.Nodes["edge1"].Reason != "stolen" {
				t.Errorf("floor = %+v", l.Nodes["edge1"])
			}
		}},
		{"serial", []string{"--serial", "0A:1B:2C", "--node", "edge1"}, "certificate serial a1b2c is revoked", "", func(t *testing.T, l revocation.List) {
			e, ok := l.Serials["a1b2c"]
			if !ok || e.Node != "edge1" || e.NotAfter.Sub(e.RevokedAt) < 365*24*time.Hour {
				t.Errorf("entry = %+v", e)
			}
		}},
		{"serial with expiry", []string{"--serial", "ff", "--not-after", "2031-01-02T03:04:05Z"}, "serial ff", "", func(t *testing.T, l revocation.List) {
			if e := l.Serials["ff"]; !e.NotAfter.Equal(time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)) {
				t.Errorf("entry = %+v", e)
			}
		}},
		{"nothing", nil, "", "name one node", nil},
		{"both", []string{"edge1", "--serial", "ff"}, "", "either a node or --serial", nil},
		{"bad serial", []string{"--serial", "xyz"}, "", "--serial: serial \"xyz\" is not a positive hexadecimal number", nil},
		{"bad node", []string{"Edge_1"}, "", `node "Edge_1" is not a valid node name`, nil},
		{"bad expiry", []string{"--serial", "ff", "--not-after", "tomorrow"}, "", "--not-after \"tomorrow\": want an RFC 3339 time", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kube := fakeCluster(true, ns)
			cmd := newRevokeCommand(testEnv(kube))
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SetArgs(tt.args)
			cmd.SilenceUsage, cmd.SilenceErrors = true, true
			err := cmd.ExecuteContext(context.Background())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !strings.Contains(out.String(), tt.wantOut) {
				t.Fatalf("out %q, err %v; want output containing %q", out.String(), err, tt.wantOut)
			}
			cm, err := kube.CoreV1().ConfigMaps("kubeedge").Get(context.Background(), revocation.ConfigMapName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			l, errs := revocation.Decode(cm.Data)
			if len(errs) > 0 {
				t.Fatalf("keadm wrote malformed entries: %v", errs)
			}
			tt.check(t, l)
		})
	}

	// A second revoke of a node keeps one floor, the later.
	kube := fakeCluster(true, ns)
	for range 2 {
		cmd := newRevokeCommand(testEnv(kube))
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetArgs([]string{"edge1"})
		if err := cmd.ExecuteContext(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	cm, _ := kube.CoreV1().ConfigMaps("kubeedge").Get(context.Background(), revocation.ConfigMapName, metav1.GetOptions{})
	if len(cm.Data) != 1 {
		t.Errorf("data after two revokes: %v", cm.Data)
	}
}
