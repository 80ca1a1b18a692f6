package framework

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/chromedp/chromedp"
)

// chromiumNames are the browser binaries tried in order: Debian's package, then other distributions' names.
var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome"}

// HaveChromium reports the path of a Chromium binary, or "" when none is installed.
func HaveChromium() string {
	if p := os.Getenv("TETHER_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range chromiumNames {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// StartBrowser starts a headless Chromium (Debian's `chromium`, never a downloaded one) with a fresh profile
// and returns a chromedp context for one tab; the browser is stopped when the test ends.
func StartBrowser(t testing.TB) context.Context {
	t.Helper()
	path := HaveChromium()
	if path == "" {
		t.Fatal("chromium not found: run hack/install-deps.sh (Debian package chromium), or set TETHER_CHROMIUM")
	}
	// --no-sandbox: Chromium refuses to run its sandbox as root. The defaults already keep /dev/shm (small in
	// containers and CI) and background networking (Google's servers cannot be reached here) out.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "profile")),
		chromedp.WindowSize(1024, 768),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	// The first Run starts the browser: fail here, with the reason, rather than in the first test step.
	if err := chromedp.Do(ctx); err != nil {
		cancelTab()
		cancelAlloc()
		t.Fatalf("starting %s: %v", path, err)
	}
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	return ctx
}
