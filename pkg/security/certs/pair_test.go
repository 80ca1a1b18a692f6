package certs

import (
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"
)

type nodePair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func mustNodePair(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey) nodePair {
	t.Helper()
	key, csr, err := NewNodeCSR("edge-1")
	if err != nil {
		t.Fatal(err)
	}
	der, err := SignNodeCSR(ca, caKey, csr, "edge-1", nil, 0, testNow)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return nodePair{cert: cert, key: key}
}

// injectCrashes makes the n-th step of a switch (0-based) crash, for the rest of the test or until the returned
// function is called; it records every step it passes.
func injectCrashes(t *testing.T, n int) (steps *[]string, stop func()) {
	t.Helper()
	var seen []string
	crashPoint = func(step string) error {
		seen = append(seen, step)
		if len(seen)-1 == n {
			return fmt.Errorf("%w at %q", errCrash, step)
		}
		return nil
	}
	stop = func() { crashPoint = func(string) error { return nil } }
	t.Cleanup(stop)
	return &seen, stop
}

// restart is edgecore starting again: recover, then read the pair the way the certificate manager does.
func restart(t *testing.T, ca *x509.Certificate, certFile, keyFile string) (*x509.Certificate, error) {
	t.Helper()
	if _, err := RecoverPair(certFile, keyFile); err != nil {
		t.Fatalf("RecoverPair: %v", err)
	}
	cert, key, err := LoadPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Fatal("LoadPair returned a mismatched pair")
	}
	if err := VerifyNodeClientCert(ca, cert, "edge-1", testNow.Add(time.Hour)); err != nil {
		t.Fatalf("pair on disk is not valid: %v", err)
	}
	return cert, nil
}

// onlyFiles checks that no journal or temporary file is left in dir.
func onlyFiles(t *testing.T, dir string, want ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s holds %v, want %v", dir, got, want)
	}
}

// TestSavePairCrashAtEveryStep stops a rotation (old pair on disk, new pair being saved) at every step in turn,
// then restarts: a matching, valid pair is always found, the old one if the crash came before the journal was
// in place and the new one after. It also crashes the recovery itself at each of its steps and recovers again.
func TestSavePairCrashAtEveryStep(t *testing.T) {
	ca, caKey := mustCA(t)
	old, next := mustNodePair(t, ca, caKey), mustNodePair(t, ca, caKey)
	layouts := []struct {
		name             string
		certRel, keyRel  string
		noPairBeforehand bool
	}{
		{name: "rotation, key next to certificate", certRel: "certs/server.crt", keyRel: "certs/server.key"},
		{name: "rotation, key in another directory", certRel: "certs/server.crt", keyRel: "private/node.key"},
		{name: "bootstrap, nothing on disk yet", certRel: "certs/server.crt", keyRel: "certs/server.key", noPairBeforehand: true},
	}
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			setup := func(t *testing.T) (certFile, keyFile string) {
				dir := t.TempDir()
				certFile, keyFile = filepath.Join(dir, l.certRel), filepath.Join(dir, l.keyRel)
				if !l.noPairBeforehand {
					if err := SavePair(certFile, keyFile, old.cert.Raw, old.key); err != nil {
						t.Fatal(err)
					}
				}
				return certFile, keyFile
			}
			// The steps of an uninterrupted switch.
			certFile, keyFile := setup(t)
			steps, stop := injectCrashes(t, -1)
			if err := SavePair(certFile, keyFile, next.cert.Raw, next.key); err != nil {
				t.Fatal(err)
			}
			stop()
			all := slices.Clone(*steps)
			switchStep := slices.Index(all, "renamed, directory not synced: "+filepath.Base(PendingPairFile(certFile)))
			if len(all) < 8 || switchStep < 0 {
				t.Fatalf("steps of a switch = %q", all)
			}

			for i, step := range all {
				t.Run(fmt.Sprintf("%02d %s", i, step), func(t *testing.T) {
					certFile, keyFile := setup(t)
					_, stop := injectCrashes(t, i)
					if err := SavePair(certFile, keyFile, next.cert.Raw, next.key); !errors.Is(err, errCrash) {
						t.Fatalf("SavePair = %v, want the injected crash", err)
					}
					stop()
					want := old.cert
					if i >= switchStep {
						want = next.cert
					}

					// The recovery crashes too, at each of its steps, before a clean one.
					for j := 0; ; j++ {
						recSteps, stop := injectCrashes(t, j)
						_, err := RecoverPair(certFile, keyFile)
						stop()
						if err == nil {
							break
						}
						if !errors.Is(err, errCrash) {
							t.Fatalf("RecoverPair after %q crashing at step %d (%q): %v", step, j, (*recSteps)[j], err)
						}
					}
					got, err := restart(t, ca, certFile, keyFile)
					switch {
					case l.noPairBeforehand && i < switchStep && errors.Is(err, fs.ErrNotExist):
						// No pair yet: the join token, still in the config, gets one again.
					case err != nil:
						t.Fatalf("after a crash at %q: %v", step, err)
					case !got.Equal(want):
						t.Errorf("after a crash at %q the pair on disk is serial %v, want %v", step, got.SerialNumber, want.SerialNumber)
					}
					if err == nil {
						onlyFiles(t, filepath.Dir(certFile), pairFilesIn(filepath.Dir(certFile), certFile, keyFile)...)
						onlyFiles(t, filepath.Dir(keyFile), pairFilesIn(filepath.Dir(keyFile), certFile, keyFile)...)
					}

					// The node carries on: the next rotation works.
					third := mustNodePair(t, ca, caKey)
					if err := SavePair(certFile, keyFile, third.cert.Raw, third.key); err != nil {
						t.Fatal(err)
					}
					if got, err := restart(t, ca, certFile, keyFile); err != nil || !got.Equal(third.cert) {
						t.Fatalf("rotation after recovery: %v", err)
					}
				})
			}
		})
	}
}

func pairFilesIn(dir string, files ...string) []string {
	var out []string
	for _, f := range files {
		if filepath.Dir(f) == dir {
			out = append(out, filepath.Base(f))
		}
	}
	return out
}

// A crash between the two renames of the old code left a mismatched pair and nothing to recover it from; a
// journal left by a crash is finished by the next SavePair before it writes its own pair.
func TestSavePairFinishesAnInterruptedSwitchFirst(t *testing.T) {
	ca, caKey := mustCA(t)
	a, b, c := mustNodePair(t, ca, caKey), mustNodePair(t, ca, caKey), mustNodePair(t, ca, caKey)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := SavePair(certFile, keyFile, a.cert.Raw, a.key); err != nil {
		t.Fatal(err)
	}
	crashPoint = func(step string) error {
		if step == "key installed" {
			return errCrash
		}
		return nil
	}
	err := SavePair(certFile, keyFile, b.cert.Raw, b.key)
	crashPoint = func(string) error { return nil }
	if !errors.Is(err, errCrash) {
		t.Fatal(err)
	}
	if _, _, err := LoadPair(certFile, keyFile); err == nil {
		t.Fatal("the crash left a matching pair; the test needs a mismatched one")
	}
	if err := SavePair(certFile, keyFile, c.cert.Raw, c.key); err != nil {
		t.Fatal(err)
	}
	if got, err := restart(t, ca, certFile, keyFile); err != nil || !got.Equal(c.cert) {
		t.Fatalf("pair = %v, %v; want the last one", got, err)
	}
}

// A damaged journal (not a torn write: it is renamed into place only once synced) is reported, not installed.
func TestRecoverPairRefusesDamagedJournal(t *testing.T) {
	ca, caKey := mustCA(t)
	a, b := mustNodePair(t, ca, caKey), mustNodePair(t, ca, caKey)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := SavePair(certFile, keyFile, a.cert.Raw, a.key); err != nil {
		t.Fatal(err)
	}
	bKey, _ := EncodeKeyPEM(b.key)
	for name, journal := range map[string][]byte{
		"garbage":        []byte("garbage"),
		"key of another": append(EncodeCertPEM(a.cert.Raw), bKey...),
		"no key":         EncodeCertPEM(b.cert.Raw),
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(PendingPairFile(certFile), journal, 0o600); err != nil {
				t.Fatal(err)
			}
			if recovered, err := RecoverPair(certFile, keyFile); err == nil || recovered {
				t.Fatalf("RecoverPair = %v, %v; want an error", recovered, err)
			}
			if got, _, err := LoadPair(certFile, keyFile); err != nil || !got.Equal(a.cert) {
				t.Fatalf("current pair changed: %v", err)
			}
		})
	}
}
