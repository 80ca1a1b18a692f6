//go:build !linux

package sqlitedbtest

// DirtyPages needs Linux's /proc/kpageflags.
func DirtyPages(string) (int, int, error) { return 0, 0, ErrUnsupported }
