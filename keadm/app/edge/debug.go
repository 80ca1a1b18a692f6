package edge

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	// Registers the "sqlite3" database/sql driver.
	_ "github.com/mattn/go-sqlite3"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"sigs.k8s.io/yaml"

	"github.com/tether-edge/tether/keadm/app/paths"
	"github.com/tether-edge/tether/pkg/resource"
)

// debugType is a kind of object in the edge database, under the names kubectl users type.
type debugType struct {
	names    []string // plural first, as printed by "get all"
	metaType string   // the {type} token in the meta table
	kind     string
	// cluster-scoped objects are stored under registerNodeNamespace, which means nothing to the user.
	clusterScoped bool
	columns       []string
	row           func(obj map[string]any, raw []byte, now time.Time, wide bool) []string
}

var debugTypes = []debugType{
	{names: []string{"pods", "pod", "po"}, metaType: resource.TypePod, kind: "Pod",
		columns: []string{"READY", "STATUS", "RESTARTS", "AGE"}, row: podRow},
	{names: []string{"nodes", "node", "no"}, metaType: resource.TypeNode, kind: "Node", clusterScoped: true,
		columns: []string{"STATUS", "AGE", "VERSION"}, row: nodeRow},
	{names: []string{"configmaps", "configmap", "cm"}, metaType: resource.TypeConfigMap, kind: "ConfigMap",
		columns: []string{"DATA", "AGE"}, row: dataRow},
	{names: []string{"secrets", "secret"}, metaType: resource.TypeSecret, kind: "Secret",
		columns: []string{"TYPE", "DATA", "AGE"}, row: secretRow},
	{names: []string{"services", "service", "svc"}, metaType: resource.TypeService, kind: "Service",
		columns: []string{"AGE"}, row: ageRow},
	{names: []string{"endpoints", "endpoint", "ep"}, metaType: resource.TypeEndpoints, kind: "Endpoints",
		columns: []string{"AGE"}, row: ageRow},
	{names: []string{"devices", "device"}, metaType: resource.TypeDevice, kind: "Device",
		columns: []string{"AGE"}, row: ageRow},
	{names: []string{"devicemodels", "devicemodel"}, metaType: resource.TypeDeviceModel, kind: "DeviceModel",
		columns: []string{"AGE"}, row: ageRow},
}

func lookupDebugType(name string) (debugType, bool) {
	name = strings.ToLower(name)
	for _, t := range debugTypes {
		if slices.Contains(t.names, name) {
			return t, true
		}
	}
	return debugType{}, false
}

type debugGetOptions struct {
	namespace     string
	allNamespaces bool
	output        string
	db            string
}

// debugNow is the clock AGE is computed with; tests fix it.
var debugNow = time.Now

func newDebugGetCommand(layout *paths.Layout) *cobra.Command {
	o := &debugGetOptions{}
	var known []string
	for _, t := range debugTypes {
		known = append(known, t.names[0])
	}
	cmd := &cobra.Command{
		Use:   "get TYPE [NAME]",
		Short: "Print objects from the edge database (read-only), kubectl style",
		Long: "Print what this edge node has stored, read-only and without the cloud: " +
			strings.Join(known, ", ") + ", or all.",
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.db == "" {
				o.db = dbFile(*layout)
			}
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			return o.run(cmd.Context(), cmd.OutOrStdout(), args[0], name)
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&o.namespace, "namespace", "n", "default", "namespace")
	fs.BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "objects of every namespace")
	fs.StringVarP(&o.output, "output", "o", "", "json, yaml or wide")
	fs.StringVarP(&o.db, "db", "p", "", "edge database; default {root}/var/lib/kubeedge/edgecore.db")
	return cmd
}

// row is one object read from the database.
type row struct {
	namespace, name string
	raw             []byte
}

func (o *debugGetOptions) run(ctx context.Context, w io.Writer, typ, name string) error {
	switch o.output {
	case "", "wide", "json", "yaml":
	default:
		return fmt.Errorf("-o %q: want json, yaml or wide", o.output)
	}
	var types []debugType
	if strings.EqualFold(typ, "all") {
		if name != "" {
			return errors.New("get all takes no NAME")
		}
		types = debugTypes
	} else {
		t, ok := lookupDebugType(typ)
		if !ok {
			var known []string
			for _, t := range debugTypes {
				known = append(known, t.names[0])
			}
			return fmt.Errorf("unknown type %q: want one of %s, or all", typ, strings.Join(known, ", "))
		}
		types = []debugType{t}
	}
	db, err := openReadOnly(o.db)
	if err != nil {
		return err
	}
	defer db.Close()

	found := map[string][]row{}
	for _, t := range types {
		rows, err := o.list(ctx, db, t, name)
		if err != nil {
			return err
		}
		found[t.metaType] = rows
	}
	if name != "" && len(found[types[0].metaType]) == 0 {
		where := " in namespace " + o.namespace
		if types[0].clusterScoped || o.allNamespaces {
			where = ""
		}
		return fmt.Errorf("%s %q not found%s in %s", types[0].names[1], name, where, o.db)
	}
	switch o.output {
	case "json", "yaml":
		return printObjects(w, types, found, name != "", o.output)
	}
	printed := 0
	for _, t := range types {
		rows := found[t.metaType]
		if len(rows) == 0 {
			continue
		}
		if printed > 0 {
			fmt.Fprintln(w)
		}
		printed++
		if err := o.printTable(w, t, rows, len(types) > 1); err != nil {
			return err
		}
	}
	if printed == 0 {
		if o.allNamespaces || (len(types) == 1 && types[0].clusterScoped) {
			fmt.Fprintf(w, "No resources found in %s\n", o.db)
		} else {
			fmt.Fprintf(w, "No resources found in namespace %s in %s\n", o.namespace, o.db)
		}
	}
	return nil
}

// openReadOnly never creates or changes the database: keadm debug may run next to a live edgecore.
func openReadOnly(path string) (*sql.DB, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("edge database %s: %w", path, err)
	}
	if _, err := os.Stat(abs); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no edge database at %s: is this host joined? (or point --db at edgecore.db)", abs)
		}
		return nil, fmt.Errorf("edge database %s: %w", abs, err)
	}
	dsn := (&url.URL{Scheme: "file", Path: abs}).String() + "?" + url.Values{
		"mode": {"ro"}, "_busy_timeout": {"5000"}, "_query_only": {"1"},
	}.Encode()
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("edge database %s: %w", abs, err)
	}
	return db, nil
}

func (o *debugGetOptions) list(ctx context.Context, db *sql.DB, t debugType, name string) ([]row, error) {
	rs, err := db.QueryContext(ctx, `SELECT key, value FROM meta WHERE type = ? ORDER BY key`, t.metaType)
	if err != nil {
		return nil, fmt.Errorf("reading %s from %s: %w", t.names[0], o.db, err)
	}
	defer rs.Close()
	var out []row
	for rs.Next() {
		var key, value string
		if err := rs.Scan(&key, &value); err != nil {
			return nil, fmt.Errorf("reading %s from %s: %w", t.names[0], o.db, err)
		}
		// {namespace}/{type}/{name}
		parts := strings.SplitN(key, "/", 3)
		if len(parts) != 3 {
			continue
		}
		r := row{namespace: parts[0], name: parts[2], raw: []byte(value)}
		if t.clusterScoped {
			r.namespace = ""
		} else if !o.allNamespaces && r.namespace != o.namespace {
			continue
		}
		if name != "" && r.name != name {
			continue
		}
		out = append(out, r)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("reading %s from %s: %w", t.names[0], o.db, err)
	}
	if t.metaType == resource.TypePod {
		if err := o.applyPodPatches(ctx, db, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// applyPodPatches folds in the status patches edged stored (type podpatch): they are the edge's latest view,
// which the cloud's copy of the pod reflects only once it was delivered back.
func (o *debugGetOptions) applyPodPatches(ctx context.Context, db *sql.DB, pods []row) error {
	for i := range pods {
		var patch string
		key := pods[i].namespace + "/" + resource.TypePodPatch + "/" + pods[i].name
		err := db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&patch)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading %s from %s: %w", key, o.db, err)
		}
		var pod, p struct {
			Metadata struct {
				UID string `json:"uid"`
			} `json:"metadata"`
		}
		// A patch for an older pod of the same name must not be applied to the new one.
		if json.Unmarshal(pods[i].raw, &pod) != nil || json.Unmarshal([]byte(patch), &p) != nil ||
			p.Metadata.UID != pod.Metadata.UID {
			continue
		}
		if merged, err := strategicpatch.StrategicMergePatch(pods[i].raw, []byte(patch), corev1.Pod{}); err == nil {
			pods[i].raw = merged
		}
	}
	return nil
}

func (o *debugGetOptions) printTable(w io.Writer, t debugType, rows []row, prefixed bool) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	head := []string{"NAME"}
	if !t.clusterScoped {
		head = []string{"NAMESPACE", "NAME"}
	}
	head = append(head, t.columns...)
	wide := o.output == "wide"
	if wide {
		head = append(head, wideColumns(t)...)
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	now := debugNow()
	for _, r := range rows {
		var obj map[string]any
		if err := json.Unmarshal(r.raw, &obj); err != nil {
			obj = map[string]any{}
		}
		name := r.name
		if prefixed {
			name = t.names[1] + "/" + name
		}
		cells := []string{name}
		if !t.clusterScoped {
			cells = []string{r.namespace, name}
		}
		cells = append(cells, t.row(obj, r.raw, now, wide)...)
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

func wideColumns(t debugType) []string {
	switch t.metaType {
	case resource.TypePod:
		return []string{"IP", "NODE"}
	case resource.TypeNode:
		return []string{"INTERNAL-IP"}
	}
	return nil
}

// printObjects prints the stored JSON: one object as is, several as a v1 List, as kubectl does.
func printObjects(w io.Writer, types []debugType, found map[string][]row, single bool, format string) error {
	var items []json.RawMessage
	for _, t := range types {
		for _, r := range found[t.metaType] {
			items = append(items, json.RawMessage(r.raw))
		}
	}
	var doc []byte
	var err error
	if single && len(items) == 1 {
		doc = items[0]
	} else {
		if items == nil {
			items = []json.RawMessage{}
		}
		doc, err = json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
		if err != nil {
			return err
		}
	}
	if format == "yaml" {
		y, err := yaml.JSONToYAML(doc)
		if err != nil {
			return fmt.Errorf("rendering YAML: %w", err)
		}
		_, err = w.Write(y)
		return err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, doc, "", "    "); err != nil {
		return fmt.Errorf("stored object is not JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err = buf.WriteTo(w)
	return err
}

func age(obj map[string]any, now time.Time) string {
	meta, _ := obj["metadata"].(map[string]any)
	s, _ := meta["creationTimestamp"].(string)
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t))
}

func ageRow(obj map[string]any, _ []byte, now time.Time, _ bool) []string {
	return []string{age(obj, now)}
}

func dataRow(obj map[string]any, _ []byte, now time.Time, _ bool) []string {
	n := 0
	for _, k := range []string{"data", "binaryData"} {
		m, _ := obj[k].(map[string]any)
		n += len(m)
	}
	return []string{strconv.Itoa(n), age(obj, now)}
}

func secretRow(obj map[string]any, raw []byte, now time.Time, wide bool) []string {
	typ, _ := obj["type"].(string)
	return append([]string{typ}, dataRow(obj, raw, now, wide)...)
}

// podRow follows kubectl's columns; STATUS is the phase unless a container says more (CrashLoopBackOff,
// Completed, ...), and Terminating once deletion started.
func podRow(_ map[string]any, raw []byte, now time.Time, wide bool) []string {
	var p corev1.Pod
	_ = json.Unmarshal(raw, &p)
	ready, restarts := 0, int32(0)
	for _, c := range p.Status.ContainerStatuses {
		if c.Ready {
			ready++
		}
		restarts += c.RestartCount
	}
	status := string(p.Status.Phase)
	if p.Status.Reason != "" {
		status = p.Status.Reason
	}
	for i := len(p.Status.ContainerStatuses) - 1; i >= 0; i-- {
		s := p.Status.ContainerStatuses[i].State
		switch {
		case s.Waiting != nil && s.Waiting.Reason != "":
			status = s.Waiting.Reason
		case s.Terminated != nil && s.Terminated.Reason != "":
			status = s.Terminated.Reason
		}
	}
	if p.DeletionTimestamp != nil {
		status = "Terminating"
	}
	if status == "" {
		status = string(corev1.PodPending)
	}
	cells := []string{fmt.Sprintf("%d/%d", ready, len(p.Spec.Containers)), status, strconv.Itoa(int(restarts)), ageOf(p.ObjectMeta, now)}
	if wide {
		cells = append(cells, orNone(p.Status.PodIP), orNone(p.Spec.NodeName))
	}
	return cells
}

func nodeRow(_ map[string]any, raw []byte, now time.Time, wide bool) []string {
	var n corev1.Node
	_ = json.Unmarshal(raw, &n)
	status := "Unknown"
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				status = "Ready"
			} else {
				status = "NotReady"
			}
		}
	}
	if n.Spec.Unschedulable {
		status += ",SchedulingDisabled"
	}
	cells := []string{status, ageOf(n.ObjectMeta, now), orNone(n.Status.NodeInfo.KubeletVersion)}
	if wide {
		ip := ""
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				ip = a.Address
				break
			}
		}
		cells = append(cells, orNone(ip))
	}
	return cells
}

func ageOf(m metav1.ObjectMeta, now time.Time) string {
	if m.CreationTimestamp.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(m.CreationTimestamp.Time))
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
