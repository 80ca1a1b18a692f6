package sqlitedbtest

import (
	"encoding/binary"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	pagemapPresent = 1 << 63
	pagemapPFNMask = 1<<55 - 1
	kpageflagDirty = 1 << 4
)

// DirtyPages maps the file at path and reports how many of its pages are dirty in the page cache, and how
// many pages it has. It needs root (/proc/self/pagemap shows page frame numbers only to CAP_SYS_ADMIN, and
// /proc/kpageflags is root's); otherwise, and on tmpfs, whose pages are never written back, the error wraps
// ErrUnsupported.
func DirtyPages(path string) (dirty, total int, err error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return 0, 0, err
	}
	if fs.Type == unix.TMPFS_MAGIC || fs.Type == unix.RAMFS_MAGIC {
		return 0, 0, fmt.Errorf("%s is on a memory file system: %w", path, ErrUnsupported)
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	size := int(fi.Size())
	if size == 0 {
		return 0, 0, nil
	}
	// MAP_POPULATE fills the page table, so every page of the mapping is in /proc/self/pagemap.
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = unix.Munmap(mem) }()
	pagemap, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return 0, 0, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	defer func() { _ = pagemap.Close() }()
	kflags, err := os.Open("/proc/kpageflags")
	if err != nil {
		return 0, 0, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	defer func() { _ = kflags.Close() }()

	page := os.Getpagesize()
	buf := make([]byte, 8)
	for off := 0; off < size; off += page {
		addr := uint64(uintptr(unsafe.Pointer(&mem[off])))
		if _, err := pagemap.ReadAt(buf, int64(addr/uint64(page))*8); err != nil {
			return 0, 0, fmt.Errorf("%w: pagemap: %w", ErrUnsupported, err)
		}
		entry := binary.LittleEndian.Uint64(buf)
		pfn := entry & pagemapPFNMask
		if entry&pagemapPresent == 0 || pfn == 0 {
			return 0, 0, fmt.Errorf("%w: page frame numbers are hidden", ErrUnsupported)
		}
		if _, err := kflags.ReadAt(buf, int64(pfn)*8); err != nil {
			return 0, 0, fmt.Errorf("%w: kpageflags: %w", ErrUnsupported, err)
		}
		total++
		if binary.LittleEndian.Uint64(buf)&kpageflagDirty != 0 {
			dirty++
		}
	}
	return dirty, total, nil
}
