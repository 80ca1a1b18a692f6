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
	"github.com/tether-edge/tether/pkg/apis/devices/v1alpha2"
	"github.com/tether-edge/tether/pkg/resource"
)

// debugType is a kind of object in the edge database, under the names kubectl users type.
type debugType struct {
	names    []string // plural first, as printed by "get all"
	metaType string   // the {type} token in the meta table
	kind     string
	// cluster-scoped objects are stored under registerNodeNamespace, which means nothing to the user.
	clusterScoped bool
	// namespaceFromID: the namespace is part of the object's id, when there is one at all (DeviceTwin device ids
	// are {name} or {namespace}/{name}), so the NAMESPACE column is printed only when some row has one.
	namespaceFromID bool
	columns         []string
	row             func(obj map[string]any, raw []byte, now time.Time, wide bool) []string
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
	// Devices come from DeviceTwin's own tables, not from meta: edgecore keeps them nowhere else.
	{names: []string{"devices", "device"}, metaType: resource.TypeDevice, kind: "Device", namespaceFromID: true,
		columns: []string{"STATE", "TWINS", "LAST-ONLINE"}, row: deviceRow},
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
			strings.Join(known, ", ") + ", or all.\n\n" +
			"Devices are read from DeviceTwin's tables; TWINS lists property=desired/reported. A device id is " +
			"{name} (what the cloud sends) or {namespace}/{name}: devices without a namespace are listed whatever " +
			"-n says, namespaced ones follow -n and -A like pods, and NAME may also be the full id.",
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
		if types[0].clusterScoped || types[0].namespaceFromID || o.allNamespaces {
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
		if o.allNamespaces || (len(types) == 1 && (types[0].clusterScoped || types[0].namespaceFromID)) {
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
	if t.metaType == resource.TypeDevice {
		return o.listDevices(ctx, db, name)
	}
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

// The annotations cloud/devicecontroller records a device's reported state in (v1alpha2 has no status field
// for it), repeated here so -o yaml shows state where kubectl users find it.
const (
	deviceStateAnnotation      = "tether.io/device-state"
	deviceLastOnlineAnnotation = "tether.io/device-last-online"
)

// debugDevice is shaped like a devices.kubeedge.io/v1alpha2 Device with only what the edge knows: the edge has no
// spec, creation time or uid, and printing them empty would pass for the cloud's values.
type debugDevice struct {
	APIVersion string                `json:"apiVersion"`
	Kind       string                `json:"kind"`
	Metadata   debugDeviceMeta       `json:"metadata"`
	Status     v1alpha2.DeviceStatus `json:"status"`
}

type debugDeviceMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// splitDeviceID follows resource.ParseDevice: an id with a slash is {namespace}/{name}.
func splitDeviceID(id string) (namespace, name string) {
	if ns, n, ok := strings.Cut(id, "/"); ok {
		return ns, n
	}
	return "", id
}

func (o *debugGetOptions) deviceSelected(id, namespace, name, want string) bool {
	if strings.Contains(want, "/") {
		return id == want
	}
	if want != "" && name != want {
		return false
	}
	return namespace == "" || o.allNamespaces || namespace == o.namespace
}

// listDevices reads DeviceTwin's KubeEdge tables. Missing tables mean DeviceTwin never ran on this node, which
// is a node without devices rather than a broken database.
func (o *debugGetOptions) listDevices(ctx context.Context, db *sql.DB, want string) ([]row, error) {
	tables := map[string]bool{}
	rs, err := db.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('device', 'device_twin')`)
	if err != nil {
		return nil, fmt.Errorf("reading device tables from %s: %w", o.db, err)
	}
	for rs.Next() {
		var t string
		if err := rs.Scan(&t); err != nil {
			_ = rs.Close()
			return nil, fmt.Errorf("reading device tables from %s: %w", o.db, err)
		}
		tables[t] = true
	}
	if err := errors.Join(rs.Err(), rs.Close()); err != nil {
		return nil, fmt.Errorf("reading device tables from %s: %w", o.db, err)
	}
	if !tables["device"] {
		return nil, nil
	}

	var ids []string
	devices := map[string]*debugDevice{}
	rs, err = db.QueryContext(ctx, `SELECT id, description, state, last_online FROM device ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("reading devices from %s: %w", o.db, err)
	}
	for rs.Next() {
		var id, desc, state, last sql.NullString
		if err := rs.Scan(&id, &desc, &state, &last); err != nil {
			_ = rs.Close()
			return nil, fmt.Errorf("reading devices from %s: %w", o.db, err)
		}
		ns, name := splitDeviceID(id.String)
		if id.String == "" || !o.deviceSelected(id.String, ns, name, want) {
			continue
		}
		d := &debugDevice{APIVersion: v1alpha2.SchemeGroupVersion.String(), Kind: "Device",
			Metadata: debugDeviceMeta{Name: name, Namespace: ns, Annotations: map[string]string{}}}
		// The cloud sends a Device's "description" label as the description, so this is where it came from.
		if desc.String != "" {
			d.Metadata.Labels = map[string]string{"description": desc.String}
		}
		if state.String != "" {
			d.Metadata.Annotations[deviceStateAnnotation] = state.String
		}
		if last.String != "" {
			d.Metadata.Annotations[deviceLastOnlineAnnotation] = last.String
		}
		ids = append(ids, id.String)
		devices[id.String] = d
	}
	if err := errors.Join(rs.Err(), rs.Close()); err != nil {
		return nil, fmt.Errorf("reading devices from %s: %w", o.db, err)
	}

	if tables["device_twin"] && len(devices) > 0 {
		if err := o.readTwins(ctx, db, devices); err != nil {
			return nil, err
		}
	}
	out := make([]row, 0, len(ids))
	for _, id := range ids {
		d := devices[id]
		raw, err := json.Marshal(d)
		if err != nil {
			return nil, fmt.Errorf("rendering device %q: %w", id, err)
		}
		out = append(out, row{namespace: d.Metadata.Namespace, name: d.Metadata.Name, raw: raw})
	}
	return out, nil
}

// readTwins adds the twins of devices. expected and actual hold the plain values (NULL: none); only the _meta
// columns are JSON, and one that does not parse costs its timestamp, not the listing.
func (o *debugGetOptions) readTwins(ctx context.Context, db *sql.DB, devices map[string]*debugDevice) error {
	// Ordered by id last so that, should a twin be stored twice, the newest row wins as in DeviceTwin's cache.
	rs, err := db.QueryContext(ctx, `SELECT deviceid, name, expected, actual, expected_meta, actual_meta, attr_type
		FROM device_twin ORDER BY deviceid, name, id`)
	if err != nil {
		return fmt.Errorf("reading device twins from %s: %w", o.db, err)
	}
	defer rs.Close()
	for rs.Next() {
		var devID, name, exp, act, expMeta, actMeta, typ sql.NullString
		if err := rs.Scan(&devID, &name, &exp, &act, &expMeta, &actMeta, &typ); err != nil {
			return fmt.Errorf("reading device twins from %s: %w", o.db, err)
		}
		d := devices[devID.String]
		// "deleted" marks a tombstone kept for the cloud, not a twin.
		if d == nil || typ.String == "deleted" {
			continue
		}
		if typ.String == "" {
			typ.String = "string"
		}
		t := v1alpha2.Twin{PropertyName: name.String,
			Desired: twinProperty(exp, expMeta, typ.String), Reported: twinProperty(act, actMeta, typ.String)}
		if n := len(d.Status.Twins); n > 0 && d.Status.Twins[n-1].PropertyName == t.PropertyName {
			d.Status.Twins[n-1] = t
		} else {
			d.Status.Twins = append(d.Status.Twins, t)
		}
	}
	if err := rs.Err(); err != nil {
		return fmt.Errorf("reading device twins from %s: %w", o.db, err)
	}
	return nil
}

// twinProperty fills metadata as the cloud does in status.twins[]: "type", and "timestamp" in Unix ms as a string.
func twinProperty(value, meta sql.NullString, typ string) v1alpha2.TwinProperty {
	p := v1alpha2.TwinProperty{Value: value.String, Metadata: map[string]string{"type": typ}}
	var m struct {
		Timestamp int64 `json:"timestamp"`
	}
	if value.Valid && json.Unmarshal([]byte(meta.String), &m) == nil && m.Timestamp != 0 {
		p.Metadata["timestamp"] = strconv.FormatInt(m.Timestamp, 10)
	}
	return p
}

func (o *debugGetOptions) printTable(w io.Writer, t debugType, rows []row, prefixed bool) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	nsColumn := !t.clusterScoped
	if t.namespaceFromID {
		nsColumn = slices.ContainsFunc(rows, func(r row) bool { return r.namespace != "" })
	}
	head := []string{"NAME"}
	if nsColumn {
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
		if nsColumn {
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

// deviceRow prints twins as property=desired/reported; a value that contains one of those separators is quoted
// so the cell still splits one way only.
func deviceRow(_ map[string]any, raw []byte, now time.Time, _ bool) []string {
	var d debugDevice
	_ = json.Unmarshal(raw, &d)
	twins := slices.Clone(d.Status.Twins)
	slices.SortFunc(twins, func(a, b v1alpha2.Twin) int { return strings.Compare(a.PropertyName, b.PropertyName) })
	cells := make([]string, 0, len(twins))
	for _, t := range twins {
		cells = append(cells, t.PropertyName+"="+twinValue(t.Desired.Value)+"/"+twinValue(t.Reported.Value))
	}
	return []string{orNone(d.Metadata.Annotations[deviceStateAnnotation]), orNone(strings.Join(cells, ",")),
		lastOnline(d.Metadata.Annotations[deviceLastOnlineAnnotation], now)}
}

func twinValue(v string) string {
	if strings.ContainsAny(v, `,=/" `) || !strconv.CanBackquote(v) {
		return strconv.Quote(v)
	}
	return v
}

// lastOnline accepts Tether's RFC 3339 and KubeEdge's "2006-01-02 15:04:05" in local time; anything else is
// shown as stored rather than hidden.
func lastOnline(s string, now time.Time) string {
	if s == "" {
		return "<none>"
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		if t, err = time.ParseInLocation(time.DateTime, s, time.Local); err != nil {
			return s
		}
	}
	return duration.HumanDuration(now.Sub(t))
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
