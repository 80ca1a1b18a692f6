package configflag

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
)

// Execute runs a binary's root command and returns the process exit code.
// The command's context is cancelled on SIGINT or SIGTERM; a second signal
// kills the process the default way, in case shutdown hangs. A failure is
// printed as a single "<name>: error: ..." line on stderr; InitRoot keeps
// cobra from printing it too.
func Execute(cmd *cobra.Command) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)

	err := cmd.ExecuteContext(ctx)
	klog.Flush()
	if err != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "%s: error: %s\n", cmd.Name(), OneLine(err.Error()))
		return 1
	}
	return 0
}

// OneLine folds a multi-line message (YAML parser errors, cobra's
// suggestions) into one line so that a failure is one line in a journal.
func OneLine(msg string) string {
	var b strings.Builder
	for line := range strings.Lines(msg) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if b.Len() > 0 {
			// "errors:\n  line 4: ..." reads as "errors: line 4: ...".
			if strings.HasSuffix(b.String(), ":") {
				b.WriteString(" ")
			} else {
				b.WriteString("; ")
			}
		}
		b.WriteString(line)
	}
	return b.String()
}
