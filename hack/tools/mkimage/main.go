// Command mkimage packs one static binary into a single-layer container image and writes it as a docker-archive
// tar that `ctr images import` loads. Edge pods and tests get their images this way: no Docker, no registry.
//
//	mkimage -bin _output/images/bin/pause -ref docker.io/tether/pause:3.10 -out pause.tar [-arch arm64] [-env K=V]...
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"k8s.io/klog/v2"
)

// envFlags collects repeated -env K=V flags.
type envFlags []string

func (e *envFlags) String() string { return strings.Join(*e, ",") }

func (e *envFlags) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return fmt.Errorf("env %q: want KEY=VALUE", v)
	}
	*e = append(*e, v)
	return nil
}

// pathFlags collects repeated absolute paths.
type pathFlags []string

func (p *pathFlags) String() string { return strings.Join(*p, ",") }

func (p *pathFlags) Set(v string) error {
	if !path.IsAbs(v) || path.Clean(v) != v || v == "/" {
		return fmt.Errorf("path %q: want a clean absolute file path, e.g. /conf/app.conf", v)
	}
	*p = append(*p, v)
	return nil
}

type options struct {
	bin, ref, out, arch, entrypoint string
	env                             []string
	emptyFiles                      []string
}

func main() {
	var o options
	var env envFlags
	var emptyFiles pathFlags
	klog.InitFlags(nil)
	flag.StringVar(&o.bin, "bin", "", "static binary to put in the image (required)")
	flag.StringVar(&o.ref, "ref", "", "image reference written into the archive, e.g. docker.io/tether/pause:3.10 (required)")
	flag.StringVar(&o.out, "out", "", "docker-archive tar to write (required)")
	flag.StringVar(&o.arch, "arch", runtime.GOARCH, "image architecture: the GOARCH the binary was built for")
	flag.StringVar(&o.entrypoint, "entrypoint", "", "path of the binary inside the image (default /<basename of -bin>)")
	flag.Var(&env, "env", "KEY=VALUE added to the image environment (repeatable)")
	flag.Var(&emptyFiles, "empty-file", "absolute path of an empty file to add, for programs that insist on a config file (repeatable)")
	flag.Parse()
	o.env, o.emptyFiles = env, emptyFiles
	if o.bin == "" || o.ref == "" || o.out == "" {
		fmt.Fprintln(os.Stderr, "mkimage: -bin, -ref and -out are required")
		flag.Usage()
		os.Exit(2)
	}
	if o.entrypoint == "" {
		o.entrypoint = "/" + filepath.Base(o.bin)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	bin, err := os.ReadFile(o.bin)
	if err != nil {
		return fmt.Errorf("reading binary: %w", err)
	}
	layerTar, err := rootfs(bin, o.entrypoint, o.emptyFiles)
	if err != nil {
		return fmt.Errorf("building layer for %s: %w", o.bin, err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return fmt.Errorf("layer for %s: %w", o.bin, err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return fmt.Errorf("appending layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("reading image config: %w", err)
	}
	cf = cf.DeepCopy()
	// empty.Image has no platform; without one, ctr's platform filter on import may drop the image.
	cf.OS, cf.Architecture = "linux", o.arch
	// A fixed creation time keeps the digest a function of the binary only, so rebuilding is reproducible.
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Entrypoint = []string{o.entrypoint}
	cf.Config.WorkingDir = "/"
	cf.Config.Env = append([]string{"PATH=/"}, o.env...)
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return fmt.Errorf("setting image config: %w", err)
	}
	tag, err := name.NewTag(o.ref)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", o.ref, err)
	}
	// Write next to the target and rename, so an interrupted run never leaves a truncated archive that the
	// build script's cache would take for a good one.
	tmp := o.out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", o.out, err)
	}
	if err := os.Rename(tmp, o.out); err != nil {
		return fmt.Errorf("writing %s: %w", o.out, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("image digest: %w", err)
	}
	klog.V(1).InfoS("Wrote image", "out", o.out, "ref", tag.String(), "arch", o.arch, "digest", digest.String())
	return nil
}

// rootfs returns the layer: the binary at entrypoint plus the few files and mount points a runtime and Go's
// os/user expect, and the requested empty files. Owners are root and times are zero so equal binaries give equal
// layers.
func rootfs(bin []byte, entrypoint string, emptyFiles []string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dirs := map[string]int64{"etc/": 0o755, "tmp/": 0o1777, "proc/": 0o555, "sys/": 0o555, "dev/": 0o755}
	// Parent dirs of the entrypoint and the empty files, e.g. /usr/local/bin/app.
	for _, f := range append([]string{entrypoint}, emptyFiles...) {
		for d := path.Dir(strings.TrimPrefix(f, "/")); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := dirs[d+"/"]; !ok {
				dirs[d+"/"] = 0o755
			}
		}
	}
	for _, d := range sortedKeys(dirs) {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: dirs[d], ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	type file struct {
		name string
		mode int64
		data []byte
	}
	files := []file{
		{"etc/passwd", 0o644, []byte("root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n")},
		{"etc/group", 0o644, []byte("root:x:0:\nnobody:x:65534:\n")},
		{strings.TrimPrefix(entrypoint, "/"), 0o755, bin},
	}
	for _, f := range emptyFiles {
		files = append(files, file{strings.TrimPrefix(f, "/"), 0o644, nil})
	}
	for _, f := range files {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// sortedKeys orders directories so parents come before children ("usr/" < "usr/local/") and the layer is
// deterministic.
func sortedKeys(m map[string]int64) []string {
	keys := slices.Collect(maps.Keys(m))
	slices.Sort(keys)
	return keys
}
