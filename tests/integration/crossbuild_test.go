//go:build integration && crossbuild

package integration

import (
	"context"
	"debug/buildinfo"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/tests/framework"
)

// The release binaries that hack/crossbuild.sh makes for an edge host's CPU are the right kind of ELF, static,
// stamped with the version, and start there: each runs under qemu-user and prints its version.
//
// hack/crossbuild.sh runs every time: Go leaves a binary whose build ID is current untouched, so with nothing
// changed it takes about a second, after a commit it relinks (~15 s per architecture), and only changed sources
// cost compilation. A cold build (empty Go cache) is the slow case: arm64 takes several minutes on 2 cores.
//
// Only arm64 runs by default: arm (ARMv7) roughly doubles the cold build time. TETHER_CROSS_TEST_ARCHES="arm64
// arm" (or amd64, run natively) chooses others.
func TestCrossBuiltBinariesRun(t *testing.T) {
	arches := strings.Fields(os.Getenv("TETHER_CROSS_TEST_ARCHES"))
	if len(arches) == 0 {
		arches = []string{"arm64"}
	}
	for _, arch := range arches {
		if _, ok := crossTargets[arch]; !ok {
			t.Fatalf("TETHER_CROSS_TEST_ARCHES: unknown architecture %q", arch)
		}
		if q := crossTargets[arch].qemu; q != "" {
			if _, err := exec.LookPath(q); err != nil {
				t.Fatalf("%s is missing: run hack/install-deps.sh (Debian package qemu-user)", q)
			}
		}
	}
	root := framework.RepoRoot()
	start := time.Now()
	cmd := exec.Command(filepath.Join(root, "hack", "crossbuild.sh"), arches...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/crossbuild.sh %s: %v\n%s", strings.Join(arches, " "), err, out)
	}
	t.Logf("hack/crossbuild.sh %s took %s", strings.Join(arches, " "), time.Since(start).Round(100*time.Millisecond))

	outDir := os.Getenv("CROSS_OUT")
	if outDir == "" {
		outDir = filepath.Join(root, "_output", "cross")
	}
	for _, arch := range arches {
		t.Run(arch, func(t *testing.T) {
			dir := filepath.Join(outDir, "linux-"+arch)
			data, err := os.ReadFile(filepath.Join(dir, "version"))
			if err != nil {
				t.Fatal(err)
			}
			version := strings.TrimSpace(string(data))
			if version == "" || version == "v0.0.0-dev" {
				t.Fatalf("%s/version holds %q, not a stamped version", dir, version)
			}
			bins := []string{"edgecore", "keadm"}
			if arch != "arm" {
				bins = append(bins, "cloudcore")
			}
			for _, name := range bins {
				crossCheckBinary(t, arch, filepath.Join(dir, name), version)
			}
		})
	}
}

type crossTarget struct {
	machine elf.Machine
	class   elf.Class
	qemu    string // qemu-user emulator; "" runs natively (amd64 on an amd64 host)
	goarm   string
}

var crossTargets = map[string]crossTarget{
	"amd64": {machine: elf.EM_X86_64, class: elf.ELFCLASS64},
	"arm64": {machine: elf.EM_AARCH64, class: elf.ELFCLASS64, qemu: "qemu-aarch64"},
	"arm":   {machine: elf.EM_ARM, class: elf.ELFCLASS32, qemu: "qemu-arm", goarm: "7"},
}

// crossCheckBinary checks the ELF header, the static link and the build settings of one binary, then runs it.
func crossCheckBinary(t *testing.T, arch, path, version string) {
	t.Helper()
	target := crossTargets[arch]
	name := filepath.Base(path)
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	if f.Machine != target.machine || f.Class != target.class || f.Type != elf.ET_EXEC {
		t.Errorf("%s: ELF %s %s %s, want %s %s ET_EXEC", name, f.Class, f.Machine, f.Type, target.class, target.machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s is dynamically linked (has PT_INTERP); crossbuild.sh links statically", name)
		}
	}
	if f.Section(".symtab") != nil {
		t.Errorf("%s is not stripped (-s -w)", name)
	}

	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: build info: %v", name, err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	want := map[string]string{"GOOS": "linux", "GOARCH": arch, "CGO_ENABLED": "1", "-trimpath": "true"}
	if target.goarm != "" {
		want["GOARM"] = target.goarm
	}
	for k, v := range want {
		if settings[k] != v {
			t.Errorf("%s: build setting %s=%q, want %q", name, k, settings[k], v)
		}
	}
	// Static glibc cannot load NSS modules: name and user lookups must be Go's own.
	for _, tag := range []string{"netgo", "osusergo"} {
		if !strings.Contains(","+settings["-tags"]+",", ","+tag+",") {
			t.Errorf("%s: built with -tags=%q, want %s", name, settings["-tags"], tag)
		}
	}
	if name == "edgecore" {
		sqlite := false
		for _, d := range bi.Deps {
			sqlite = sqlite || d.Path == "github.com/mattn/go-sqlite3"
		}
		if !sqlite {
			t.Errorf("edgecore does not link github.com/mattn/go-sqlite3")
		}
	}

	// edgecore and cloudcore print their version with --version, keadm with its version command.
	arg := "--version"
	if name == "keadm" {
		arg = "version"
	}
	argv := []string{path, arg}
	if target.qemu != "" {
		// Static binaries need no -L sysroot for the dynamic loader.
		argv = append([]string{target.qemu}, argv...)
	} else if runtime.GOARCH != arch {
		t.Fatalf("no emulator for %s on a %s host", arch, runtime.GOARCH)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	got := strings.TrimSpace(string(out))
	wantPrefix := name + " " + version + " "
	if !strings.HasPrefix(got, wantPrefix) || !strings.Contains(got, "linux/"+arch+")") {
		t.Errorf("%s printed %q, want %q... linux/%s)", strings.Join(argv, " "), got, wantPrefix, arch)
	}
	t.Logf("%.1f MiB, ran in %s: %s", float64(info.Size())/(1<<20), time.Since(start).Round(10*time.Millisecond), got)
}
