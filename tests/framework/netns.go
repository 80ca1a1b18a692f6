package framework

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Netns is a network namespace that stands in for a separate host: made with `ip netns add`, with loopback up
// and one veth pair to this host on a /30 of its own. Processes started through Command see only that network,
// as a host behind a point-to-point link would.
type Netns struct {
	// Name is the name under /run/netns, as `ip netns` shows it.
	Name string
	// Path is its bind mount, /run/netns/<Name>: what nsenter --net and setns take.
	Path string
	// Inode identifies it: /proc/<pid>/ns/net of every process inside has this inode.
	Inode uint64
	// IP is the namespace's own address, the "other host's" IP.
	IP string
	// HostIP is this host's end of the veth, the only address the namespace can reach this host at.
	HostIP string
	// HostLink and Link are the veth ends, on this host and inside the namespace.
	HostLink, Link string
}

// netnsSeq keeps the names and subnets of several namespaces in one test binary apart.
var netnsSeq atomic.Uint32

// StartNetns creates the namespace and the veth pair and removes both when the test ends, after killing whatever
// still runs inside (a failed test must not leave daemons behind in a namespace nobody can see). Create it before
// the containerd and the processes that will run in it, so that their cleanups run first. It needs root and
// iproute2's ip.
func StartNetns(t testing.TB) *Netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("network namespaces need root")
	}
	for _, bin := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: install iproute2 and util-linux", bin)
		}
	}
	seq := netnsSeq.Add(1)
	// Interface names hold at most 15 bytes; the PID keeps concurrent test binaries apart.
	tag := fmt.Sprintf("%d%c", os.Getpid()%1000000, 'a'+rune(seq%26))
	n := &Netns{Name: "tether-" + tag, HostLink: "tth" + tag, Link: "ttn" + tag}
	n.Path = filepath.Join("/run/netns", n.Name)
	subnet, err := freeSubnet(uint32(os.Getpid())*31 + seq)
	if err != nil {
		t.Fatal(err)
	}
	n.HostIP, n.IP = subnet[0], subnet[1]

	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", n.Name, err, out)
	}
	t.Cleanup(func() { n.remove(t) })
	var st syscall.Stat_t
	if err := syscall.Stat(n.Path, &st); err != nil {
		t.Fatalf("stat %s: %v", n.Path, err)
	}
	n.Inode = st.Ino
	for _, args := range [][]string{
		{"link", "add", n.HostLink, "type", "veth", "peer", "name", n.Link, "netns", n.Name},
		{"addr", "add", n.HostIP + "/30", "dev", n.HostLink},
		{"link", "set", n.HostLink, "up"},
		{"-n", n.Name, "addr", "add", n.IP + "/30", "dev", n.Link},
		{"-n", n.Name, "link", "set", n.Link, "up"},
		{"-n", n.Name, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// The veth passes traffic once both ends have carrier; the first connection must not race that.
	Eventually(t, 10*time.Second, "veth "+n.HostLink+" up", func() bool {
		out, err := exec.Command("ip", "-br", "link", "show", "dev", n.HostLink).Output()
		return err == nil && strings.Contains(string(out), " UP ")
	})
	t.Logf("network namespace %s: %s/30 inside, %s/30 on this host (%s)", n.Name, n.IP, n.HostIP, n.HostLink)
	return n
}

// freeSubnet picks a /30 in 10.213.0.0/16 (an unlikely range for a real network) that no local interface uses,
// starting from seed so that concurrent test binaries start from different places. It returns the host and
// namespace addresses, .1 and .2 of the /30.
func freeSubnet(seed uint32) ([2]string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return [2]string{}, fmt.Errorf("listing local addresses: %w", err)
	}
	const blocks = 1 << 14 // /30s in a /16
	h := fnv.New32a()
	_ = binary.Write(h, binary.LittleEndian, seed)
	start := h.Sum32() % blocks
	for i := uint32(0); i < blocks; i++ {
		b := (start + i) % blocks
		base := net.IPv4(10, 213, byte(b>>6), byte(b&63)<<2).To4()
		block := &net.IPNet{IP: base, Mask: net.CIDRMask(30, 32)}
		used := false
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && (block.Contains(ipn.IP) || ipn.Contains(base)) {
				used = true
				break
			}
		}
		if !used {
			host, ns := make(net.IP, 4), make(net.IP, 4)
			copy(host, base)
			copy(ns, base)
			host[3]++
			ns[3] += 2
			return [2]string{host.String(), ns.String()}, nil
		}
	}
	return [2]string{}, errors.New("no free /30 in 10.213.0.0/16")
}

// Command runs name inside the namespace. It uses nsenter --net rather than `ip netns exec`: the latter also
// gives the command a private mount namespace with a fresh /sys, which hides the cgroup hierarchies of a
// cgroup v1 host, so runc and edged could not create pod cgroups there. Only the network changes here, which
// is all that separates this "host" from the real one.
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	return n.CommandContext(context.Background(), name, args...)
}

// CommandContext is Command, killed when ctx is done.
func (n *Netns) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + n.Path, "--", name}, args...)...)
}

// Contains reports whether pid runs inside the namespace.
func (n *Netns) Contains(pid int) bool {
	ino, ok := netnsInode(pid)
	return ok && ino == n.Inode
}

// Processes lists the live processes inside the namespace.
func (n *Netns) Processes() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && n.Contains(pid) && !zombie(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func netnsInode(pid int) (uint64, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
		return 0, false
	}
	return st.Ino, true
}

func zombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X'
}

// remove kills what is left inside, then deletes the veth and the namespace. A namespace outlives `ip netns
// del` while a process still runs in it, so the kill comes first.
func (n *Netns) remove(t testing.TB) {
	if left := n.Processes(); len(left) > 0 {
		var desc []string
		for _, pid := range left {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			desc = append(desc, fmt.Sprintf("%d (%s)", pid, strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ")))
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		// Their owners' cleanups ran before this one; anything still here leaked.
		if !t.Failed() {
			t.Errorf("processes left in network namespace %s, killed: %s", n.Name, strings.Join(desc, "; "))
		} else {
			t.Logf("killed processes left in network namespace %s: %s", n.Name, strings.Join(desc, "; "))
		}
		deadline := time.Now().Add(10 * time.Second)
		for len(n.Processes()) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Deleting the host end deletes its peer; it is gone already if the namespace went first.
	if out, err := exec.Command("ip", "link", "del", n.HostLink).CombinedOutput(); err != nil &&
		!strings.Contains(string(out), "Cannot find device") {
		t.Errorf("ip link del %s: %v\n%s", n.HostLink, err, out)
	}
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		t.Errorf("ip netns del %s: %v\n%s", n.Name, err, out)
	}
}

// ContainerdOption changes how StartContainerd runs containerd.
type ContainerdOption func(*Containerd)

// InNetns starts containerd inside n, so that its shims and every hostNetwork pod run there too. Only the
// daemon's start goes through n: the teardown works through the socket, /proc and the mount table, from
// anywhere.
func InNetns(n *Netns) ContainerdOption {
	return func(c *Containerd) { c.netns = n }
}
