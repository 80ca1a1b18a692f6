package cloud

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tether-edge/tether/cloud/cloudhub/certificate"
	"github.com/tether-edge/tether/pkg/security/certs"
	"github.com/tether-edge/tether/pkg/security/revocation"
	"github.com/tether-edge/tether/pkg/security/token"
)

// edgeRoleLabel marks edge Nodes; cloudcore refuses re-join tokens for
// other Nodes.
const edgeRoleLabel = "node-role.kubernetes.io/edge"

// maxRejoinTTL keeps re-join tokens short-lived: one lets its holder replace
// a live node.
const maxRejoinTTL = 7 * 24 * time.Hour

// serialRetention is how long a serial entry is kept when the certificate's
// expiry is not given: longer than any certificate cloudcore issues by
// default (30 days; KubeEdge's 365).
const serialRetention = 366 * 24 * time.Hour

func checkNodeName(flag, name string) error {
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return fmt.Errorf("%s %q is not a valid node name: %s", flag, name, strings.Join(msgs, "; "))
	}
	return nil
}

// runGetRejoinToken prints a re-join token for node, signed with the CA key
// cloudcore keeps in Secret kubeedge/casecret.
func runGetRejoinToken(ctx context.Context, e env, kubeconfig, node string, ttl time.Duration, out, errOut io.Writer) error {
	if err := checkNodeName("--rejoin", node); err != nil {
		return err
	}
	if ttl <= 0 || ttl > maxRejoinTTL {
		return fmt.Errorf("--ttl %v: want a positive duration of at most %v (the default is %v)", ttl, maxRejoinTTL, token.DefaultRejoinTTL)
	}
	c, err := e.newClients(kubeconfig)
	if err != nil {
		return err
	}
	n, err := c.kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	exists := true
	switch {
	case apierrors.IsNotFound(err):
		exists = false
	case err != nil:
		return fmt.Errorf("looking up node %s on %s: %s", node, c.host, rootCause(err))
	case !hasLabel(n, edgeRoleLabel):
		return fmt.Errorf("node %s is a kubelet node, not an edge node (no %s label): cloudcore refuses to hand its name to an edge node", node, edgeRoleLabel)
	}
	caDER, keyDER, err := c.caMaterial(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	tok, err := token.CreateRejoin(caDER, keyDER, node, ttl, now)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(out, tok); err != nil {
		return err
	}
	note := "it replaces the edge node, whose older certificates are revoked when it joins"
	if !exists {
		note = "there is no Node " + node + " now, so it joins as a new node; any older certificates of that name are revoked when it joins"
	}
	fmt.Fprintf(errOut, "[gettoken] re-join token for node %s, valid until %s: keadm join --edgenode-name %s --token <token> on the node; %s\n",
		node, now.Add(ttl).UTC().Format(time.RFC3339), node, note)
	return nil
}

func hasLabel(n *corev1.Node, label string) bool {
	_, ok := n.Labels[label]
	return ok
}

// caMaterial reads the CA certificate and key cloudcore shares in
// kubeedge/casecret (the key is also the tokens' HMAC key).
func (c *clients) caMaterial(ctx context.Context) (caDER, keyDER []byte, err error) {
	s, err := c.kube.CoreV1().Secrets(certificate.Namespace).Get(ctx, certificate.CASecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, fmt.Errorf("no Secret %s/%s on %s: cloudcore creates it when it first starts; is it installed? (keadm init)",
			certificate.Namespace, certificate.CASecretName, c.host)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading Secret %s/%s from %s: %s", certificate.Namespace, certificate.CASecretName, c.host, rootCause(err))
	}
	caDER, keyDER = s.Data[certificate.CADataKey], s.Data[certificate.CAKeyDataKey]
	if len(caDER) == 0 || len(keyDER) == 0 {
		return nil, nil, fmt.Errorf("Secret %s/%s on %s lacks %s or %s", certificate.Namespace, certificate.CASecretName, c.host,
			certificate.CADataKey, certificate.CAKeyDataKey)
	}
	if _, err := certs.ParseKeyDER(keyDER); err != nil {
		return nil, nil, fmt.Errorf("Secret %s/%s key %s: %w", certificate.Namespace, certificate.CASecretName, certificate.CAKeyDataKey, err)
	}
	return caDER, keyDER, nil
}

type revokeOptions struct {
	kubeconfig string
	serial     string
	node       string
	notAfter   string
	reason     string
}

func newRevokeCommand(e env) *cobra.Command {
	var o revokeOptions
	cmd := &cobra.Command{
		Use:   "revoke (NODE | --serial HEX)",
		Short: "Revoke an edge node's certificates, or one certificate",
		Long: "Add to the certificate revocation list (ConfigMap kubeedge/" + revocation.ConfigMapName + ") that every cloudcore honours.\n\n" +
			"keadm revoke NODE revokes every certificate of NODE issued until now: cloudcore closes its session within seconds, and the " +
			"node can neither reconnect nor renew its certificate until it joins again with a token from \"keadm gettoken --rejoin NODE\".\n\n" +
			"keadm revoke --serial HEX revokes one certificate by its serial number (openssl x509 -serial -noout -in node.crt).",
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case o.serial == "" && len(args) != 1:
				return errors.New("name one node (keadm revoke NODE), or pass --serial HEX")
			case o.serial != "" && len(args) != 0:
				return errors.New("pass either a node or --serial, not both")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.serial != "" {
				return runRevokeSerial(cmd.Context(), e, o, cmd.OutOrStdout())
			}
			return runRevokeNode(cmd.Context(), e, o, args[0], cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kube-config", "", "kubeconfig of the cluster cloudcore serves (default $KUBECONFIG, else ~/.kube/config)")
	f.StringVar(&o.serial, "serial", "", "revoke the one certificate with this serial number (hex, colons allowed)")
	f.StringVar(&o.node, "node", "", "with --serial: the node the certificate belongs to, for messages")
	f.StringVar(&o.notAfter, "not-after", "", "with --serial: when the certificate expires (RFC 3339); the entry is dropped after it (default: in 366 days)")
	f.StringVar(&o.reason, "reason", revocation.ReasonKeadm, "why, recorded in the list and shown in refusals")
	return cmd
}

func runRevokeNode(ctx context.Context, e env, o revokeOptions, node string, out io.Writer) error {
	if err := checkNodeName("node", node); err != nil {
		return err
	}
	if o.node != "" || o.notAfter != "" {
		return errors.New("--node and --not-after go with --serial")
	}
	c, err := e.newClients(o.kubeconfig)
	if err != nil {
		return err
	}
	now := time.Now()
	f, err := revocation.RevokeNode(ctx, c.kube, node, revocation.NodeFloor{Before: now, Reason: o.reason}, now)
	if err != nil {
		return revokeError(c, err)
	}
	if f.Before.After(now) {
		fmt.Fprintf(out, "[revoke] certificates of node %s issued before %s were already revoked (%s)\n", node, f.Before.UTC().Format(time.RFC3339), f.Reason)
	} else {
		fmt.Fprintf(out, "[revoke] certificates of node %s issued before %s are revoked; cloudcore closes its session within seconds\n",
			node, now.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(out, "[revoke] to let it back: keadm gettoken --rejoin %s, then keadm join with that token on the node\n", node)
	return nil
}

func runRevokeSerial(ctx context.Context, e env, o revokeOptions, out io.Writer) error {
	serial, err := revocation.NormalizeSerial(o.serial)
	if err != nil {
		return fmt.Errorf("--serial: %w", err)
	}
	if o.node != "" {
		if err := checkNodeName("--node", o.node); err != nil {
			return err
		}
	}
	now := time.Now()
	notAfter := now.Add(serialRetention)
	if o.notAfter != "" {
		if notAfter, err = time.Parse(time.RFC3339, o.notAfter); err != nil {
			return fmt.Errorf("--not-after %q: want an RFC 3339 time such as 2031-01-02T03:04:05Z", o.notAfter)
		}
	}
	c, err := e.newClients(o.kubeconfig)
	if err != nil {
		return err
	}
	entry, err := revocation.RevokeSerial(ctx, c.kube, serial,
		revocation.SerialEntry{Node: o.node, RevokedAt: now, NotAfter: notAfter, Reason: o.reason}, now)
	if err != nil {
		return revokeError(c, err)
	}
	if entry.RevokedAt.Before(now) {
		fmt.Fprintf(out, "[revoke] certificate serial %s was already revoked at %s\n", serial, entry.RevokedAt.UTC().Format(time.RFC3339))
		return nil
	}
	fmt.Fprintf(out, "[revoke] certificate serial %s is revoked; a session using it is closed within seconds\n", serial)
	return nil
}

func revokeError(c *clients, err error) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("namespace %s does not exist on %s: is cloudcore installed? (keadm init)", revocation.Namespace, c.host)
	}
	return fmt.Errorf("updating the revocation list on %s: %s", c.host, rootCause(err))
}
