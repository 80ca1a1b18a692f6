// Package cloud holds keadm's cloud-side commands: init, gettoken, reset cloud.
//
// init installs cloudcore as a binary next to the API server (KubeEdge v1.7's flow, spec §17.1), from a
// local binary and the CRDs built into keadm, so that it works offline; build/manifests/cloudcore is the
// in-cluster alternative.
package cloud

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/tether-edge/tether/cloud/cloudhub/certificate"
	"github.com/tether-edge/tether/keadm/app/paths"
	"github.com/tether-edge/tether/pkg/security/token"
)

// NewInitCommand is `keadm init`.
func NewInitCommand(layout *paths.Layout) *cobra.Command {
	return newInitCommand(layout, defaultEnv())
}

// NewGetTokenCommand is `keadm gettoken`.
func NewGetTokenCommand(layout *paths.Layout) *cobra.Command {
	return newGetTokenCommand(defaultEnv())
}

// NewRevokeCommand is `keadm revoke`.
func NewRevokeCommand(layout *paths.Layout) *cobra.Command {
	return newRevokeCommand(defaultEnv())
}

// NewResetCommand is `keadm reset cloud`.
func NewResetCommand(layout *paths.Layout) *cobra.Command {
	return newResetCommand(layout, defaultEnv())
}

func newGetTokenCommand(e env) *cobra.Command {
	var kubeconfig, rejoin string
	ttl := token.DefaultRejoinTTL
	cmd := &cobra.Command{
		Use:   "gettoken",
		Short: "Print the token edge nodes join with",
		Long: "Print the join token cloudcore keeps in Secret kubeedge/tokensecret, for keadm join --token. It joins new nodes only.\n\n" +
			"With --rejoin NODE, print a short-lived re-join token bound to that node instead: the only token that lets an edge node " +
			"that already joined join again (a replaced box, or one offline longer than its certificate). Once it is used, every older " +
			"certificate of the node is revoked. It is signed with the CA key, read from Secret kubeedge/casecret.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("rejoin") || rejoin != "" {
				return runGetRejoinToken(cmd.Context(), e, kubeconfig, rejoin, ttl, cmd.OutOrStdout(), cmd.ErrOrStderr())
			}
			if cmd.Flags().Changed("ttl") {
				return errors.New("--ttl applies to re-join tokens only (--rejoin NODE); the join token's lifetime is cloudcore's tokenRefreshDuration")
			}
			return runGetToken(cmd.Context(), e, kubeconfig, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&kubeconfig, "kube-config", kubeconfig, "kubeconfig of the cluster cloudcore serves (default $KUBECONFIG, else ~/.kube/config)")
	cmd.Flags().StringVar(&rejoin, "rejoin", "", "print a re-join token bound to this existing edge node instead of the join token")
	cmd.Flags().DurationVar(&ttl, "ttl", ttl, "lifetime of the re-join token")
	return cmd
}

func runGetToken(ctx context.Context, e env, kubeconfig string, out io.Writer) error {
	c, err := e.newClients(kubeconfig)
	if err != nil {
		return err
	}
	tok, err := c.joinToken(ctx)
	if err != nil {
		return err
	}
	if tok == "" {
		return fmt.Errorf("no join token in Secret %s/%s on %s yet: cloudcore publishes it when it starts; is it running? (keadm init starts it)",
			certificate.Namespace, certificate.TokenSecretName, c.host)
	}
	_, err = fmt.Fprintln(out, tok)
	return err
}
