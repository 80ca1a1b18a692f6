// Command testapp is the workload of the end-to-end tests, packed into the tether/testapp image by
// hack/build-images.sh. Everything is driven by the environment, so one image covers many cases:
//
//	POD_NAME         named in the log lines and in the HTTP greeting
//	PORT             serve HTTP on LISTEN_HOST:PORT: / answers "hello from $POD_NAME", /env the environment
//	LISTEN_HOST      default 127.0.0.1: test pods use the host network, and loopback is all a test needs
//	EXIT_AFTER       exit after this many seconds (restart policies, crash loops) ...
//	EXIT_AFTER_CODE  ... with this exit code (default 0)
//	SHOW_DIR         print every file under this directory at start (ConfigMap, Secret, volume contents)
//
// It logs its environment at start and one "tick" line per second to stdout, so tests can read the CRI log.
// SIGTERM ends it with code 0 after a "terminating" line, as a well-behaved app would.
//
// The image has no shell, so arguments are steps run once at start, before the above, separated by "--"
// (each prints one line per result, prefixed with the step, for tests to find in the log):
//
//	cat FILE           print FILE, one "cat FILE: <line>" per line, or "cat FILE: error: ..."
//	write FILE TEXT    write TEXT to FILE: "write FILE: ok" or "write FILE: error: ..."
//	symlink TARGET LINK  create LINK -> TARGET: "symlink LINK: ok" or an error
//	mkdir DIR          create DIR and its parents: "mkdir DIR: ok" or an error
//	ls DIR             list DIR: "ls DIR: <name>" per entry, or an error
//
// e.g. args ["symlink", "/", "/vol/escape", "--", "cat", "/proc/self/status"] with EXIT_AFTER=0 for an init
// container. Failed steps are reported, not fatal: tests check that something is refused.
package main

import (
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxShow bounds how much of each file SHOW_DIR prints; tests only look for short markers.
const maxShow = 4096

func main() {
	pod := os.Getenv("POD_NAME")
	say("start pod=%s pid=%d", pod, os.Getpid())
	env := os.Environ()
	slices.Sort(env)
	for _, kv := range env {
		say("env %s", kv)
	}
	if dir := os.Getenv("SHOW_DIR"); dir != "" {
		showDir(dir)
	}
	runSteps(os.Args[1:])
	if port := os.Getenv("PORT"); port != "" {
		go serve(envOr("LISTEN_HOST", "127.0.0.1")+":"+port, pod)
	}

	var exitAfter <-chan time.Time
	if s := os.Getenv("EXIT_AFTER"); s != "" {
		secs, err := strconv.ParseFloat(s, 64)
		if err != nil {
			fail("EXIT_AFTER=%q is not a number of seconds", s)
		}
		exitAfter = time.After(time.Duration(secs * float64(time.Second)))
	}
	code := 0
	if s := os.Getenv("EXIT_AFTER_CODE"); s != "" {
		var err error
		if code, err = strconv.Atoi(s); err != nil {
			fail("EXIT_AFTER_CODE=%q is not an integer", s)
		}
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	tick := time.NewTicker(time.Second)
	for i := 0; ; i++ {
		select {
		case <-tick.C:
			say("tick %d pod=%s", i, pod)
		case <-exitAfter:
			say("exiting with code %d after EXIT_AFTER=%s", code, os.Getenv("EXIT_AFTER"))
			os.Exit(code)
		case s := <-sigs:
			say("terminating on %v", s)
			os.Exit(0)
		}
	}
}

// say writes one line to stdout; the runtime timestamps it in the CRI log, so no prefix is needed.
func say(format string, args ...any) { fmt.Printf(format+"\n", args...) }

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "testapp: "+format+"\n", args...)
	os.Exit(2)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func serve(addr, pod string) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", pod)
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, _ *http.Request) {
		env := os.Environ()
		slices.Sort(env)
		fmt.Fprintln(w, strings.Join(env, "\n"))
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	say("serving http on %s", addr)
	if err := http.ListenAndServe(addr, mux); err != nil {
		fail("http on %s: %v", addr, err)
	}
}

// showDir prints "file <path>: <content>" for each file under dir. Kubelet's atomic writer puts the real files
// in "..data" and hidden timestamped dirs and links the keys to them, so names starting with ".." are skipped and
// links are followed; each key then appears once, under its own name.
func showDir(dir string) {
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), "..") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		st, err := os.Stat(path) // follows the key -> ..data/key link
		if err != nil || !st.Mode().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if len(data) > maxShow {
			data = data[:maxShow]
		}
		rel, _ := filepath.Rel(dir, path)
		say("file %s: %s", rel, strings.TrimRight(string(data), "\n"))
		return nil
	})
	if err != nil {
		say("SHOW_DIR %s: %v", dir, err)
	}
}

// runSteps runs the argument steps (see the package comment) in order.
func runSteps(args []string) {
	for len(args) > 0 {
		step := args
		rest := []string(nil)
		if i := slices.Index(args, "--"); i >= 0 {
			step, rest = args[:i], args[i+1:]
		}
		args = rest
		if len(step) == 0 {
			continue
		}
		runStep(step[0], step[1:])
	}
}

func runStep(name string, a []string) {
	need := map[string]int{"cat": 1, "write": 2, "symlink": 2, "mkdir": 1, "ls": 1}
	n, known := need[name]
	if !known {
		fail("unknown step %q (known: cat, write, symlink, mkdir, ls)", name)
	}
	if len(a) != n {
		fail("step %s takes %d arguments, got %q", name, n, a)
	}
	result := func(subject string, err error) {
		if err != nil {
			say("%s %s: error: %v", name, subject, err)
			return
		}
		say("%s %s: ok", name, subject)
	}
	switch name {
	case "cat":
		data, err := os.ReadFile(a[0])
		if err != nil {
			result(a[0], err)
			return
		}
		for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
			say("cat %s: %s", a[0], line)
		}
	case "write":
		result(a[0], os.WriteFile(a[0], []byte(a[1]), 0o644))
	case "symlink":
		result(a[1], os.Symlink(a[0], a[1]))
	case "mkdir":
		result(a[0], os.MkdirAll(a[0], 0o755))
	case "ls":
		entries, err := os.ReadDir(a[0])
		if err != nil {
			result(a[0], err)
			return
		}
		for _, e := range entries {
			say("ls %s: %s", a[0], e.Name())
		}
	}
}
