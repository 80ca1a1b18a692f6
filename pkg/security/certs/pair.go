package certs

import (
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// A node's key and certificate live in two files (tlsPrivateKeyFile and tlsCertFile, as KubeEdge has them), and
// no rename replaces two files at once. SavePair therefore journals: it first writes the new pair, certificate
// and key in one PEM file, next to the certificate (PendingPairFile) and makes it durable (file fsynced, renamed
// into place, directory fsynced). That rename is the switch: from then on the new pair is the node's pair even if
// the two files still hold the old one. Then it replaces the key and the certificate, each atomically and
// durably, and removes the journal. RecoverPair, run before the pair is read at start, finishes an interrupted
// switch from the journal, so a crash at any point leaves either the old pair (before the switch) or the new one
// (after it), never a key of one and a certificate of the other. The previous pair is not kept: the new pair is
// on disk before either file changes, so there is nothing to roll back to.

// PendingPairFile is the journal of a switch to a new pair whose certificate goes to certFile: a hidden file
// next to it, holding the new certificate and key (mode 0600).
func PendingPairFile(certFile string) string {
	return filepath.Join(filepath.Dir(certFile), "."+filepath.Base(certFile)+".pending")
}

// crashPoint is called between the steps of a pair switch; tests make it fail to stop the switch there, as a
// crash would, leaving everything on disk as it is.
var crashPoint = func(step string) error { return nil }

// SavePair makes certDER and key the pair in certFile (0644) and keyFile (0600), crash-safely (see above). A
// switch a crash left unfinished is finished first. The certificate must be key's.
func SavePair(certFile, keyFile string, certDER []byte, key *ecdsa.PrivateKey) error {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return fmt.Errorf("save %s: %w", certFile, err)
	}
	if key == nil || !key.PublicKey.Equal(cert.PublicKey) {
		return fmt.Errorf("save %s and %s: the certificate is not for the key", certFile, keyFile)
	}
	keyPEM, err := EncodeKeyPEM(key)
	if err != nil {
		return err
	}
	if _, err := RecoverPair(certFile, keyFile); err != nil {
		return err
	}
	certPEM := EncodeCertPEM(certDER)
	journal := PendingPairFile(certFile)
	if err := writeFileAtomic(journal, append(append([]byte(nil), certPEM...), keyPEM...), 0o600); err != nil {
		return fmt.Errorf("stage the new pair: %w", err)
	}
	if err := crashPoint("staged"); err != nil {
		return err
	}
	return installPair(certFile, keyFile, journal, certPEM, keyPEM)
}

// installPair replaces the key, then the certificate, then drops the journal. Every step can be repeated.
func installPair(certFile, keyFile, journal string, certPEM, keyPEM []byte) error {
	if err := writeFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	if err := crashPoint("key installed"); err != nil {
		return err
	}
	if err := writeFileAtomic(certFile, certPEM, 0o644); err != nil {
		return err
	}
	if err := crashPoint("certificate installed"); err != nil {
		return err
	}
	if err := os.Remove(journal); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", journal, err)
	}
	return syncDir(filepath.Dir(journal))
}

// RecoverPair finishes a pair switch that a crash interrupted (see SavePair), reporting whether there was one,
// and removes temporary files a crash left. Run it before reading the pair.
func RecoverPair(certFile, keyFile string) (recovered bool, err error) {
	journal := PendingPairFile(certFile)
	removeTemps(certFile, keyFile, journal)
	data, err := os.ReadFile(journal)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read pending pair: %w", err)
	}
	cert, certErr := DecodeCertPEM(data)
	key, keyErr := DecodeKeyPEM(data)
	if err := errors.Join(certErr, keyErr); err != nil || !key.PublicKey.Equal(cert.PublicKey) {
		// The journal is renamed into place only once complete and synced, so this is not a torn write but
		// damage; the two files have not been touched since it was written, or were from a good journal.
		return false, fmt.Errorf("pending pair %s is unusable (remove it to keep the current pair): %w", journal,
			errors.Join(err, errors.New("certificate and key do not match")))
	}
	keyPEM, err := EncodeKeyPEM(key)
	if err != nil {
		return false, err
	}
	if err := installPair(certFile, keyFile, journal, EncodeCertPEM(cert.Raw), keyPEM); err != nil {
		return false, fmt.Errorf("finish the switch to the pending pair %s: %w", journal, err)
	}
	return true, nil
}

// removeTemps removes what writeFileAtomic leaves when it stops before its rename.
func removeTemps(paths ...string) {
	for _, p := range paths {
		matches, _ := filepath.Glob(filepath.Join(filepath.Dir(p), tempPrefix(p)+"*"))
		for _, m := range matches {
			_ = os.Remove(m)
		}
	}
}

func tempPrefix(path string) string { return "." + filepath.Base(path) + ".tmp" }

// writeFileAtomic replaces path with data durably: readers see the old or the new content, never a mix, and once
// it returns the new content survives a power loss (file fsynced before the rename, directory after).
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	if err := mkdirAllDurable(dir); err != nil {
		return fmt.Errorf("create directory for %s: %w", path, err)
	}
	// CreateTemp uses 0600, so key bytes are never world-readable.
	f, err := os.CreateTemp(dir, tempPrefix(path)+"*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil && !errors.Is(err, errCrash) {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err = crashPoint("written, not renamed: " + filepath.Base(path)); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	if err = crashPoint("renamed, directory not synced: " + filepath.Base(path)); err != nil {
		return err
	}
	if err = syncDir(dir); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}

// errCrash marks a crash a test injected: nothing may be cleaned up after it.
var errCrash = errors.New("injected crash")

// mkdirAllDurable creates dir and its missing parents, and syncs the parent of each one it creates.
func mkdirAllDurable(dir string) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		if parent := filepath.Dir(d); parent == d {
			break
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, d := range missing {
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// syncDir fsyncs a directory, so that the renames and removals in it survive a power loss.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	// Some file systems cannot sync a directory and say so with EINVAL; there is nothing more to do there.
	if err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
