// Package cloud holds keadm's cloud-side commands: init, gettoken, reset cloud.
//
// init installs cloudcore as a binary next to the API server (KubeEdge v1.7's flow, spec §17.1), from a
// local binary and the CRDs built into keadm, so that it works offline; build/manifests/cloudcore is the
// in-cluster alternative.
package cloud

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/tether-edge/tether/cloud/cloudhub/certificate"
	"github.com/tether-edge/tether/keadm/app/paths"
)

// NewInitCommand is `keadm init`.
func NewInitCommand(layout *paths.Layout) *cobra.Command {
	return newInitCommand(layout, defaultEnv())
}

// NewGetTokenCommand is `keadm gettoken`.
func NewGetTokenCommand(layout *paths.Layout) *cobra.Command {
	return newGetTokenCommand(defaultEnv())
}

// NewResetCommand is `keadm reset cloud`.
func NewResetCommand(layout *paths.Layout) *cobra.Command {
	return newResetCommand(layout, defaultEnv())
}

func newGetTokenCommand(e env) *cobra.Command {
	var kubeconfig string
	cmd := &cobra.Command{
		Use:   "gettoken",
		Short: "Print the token edge nodes join with",
		Long:  "Print the join token cloudcore keeps in Secret kubeedge/tokensecret, for keadm join --token.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runGetToken(cmd.Context(), e, kubeconfig, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&kubeconfig, "kube-config", kubeconfig, "kubeconfig of the cluster cloudcore serves (default $KUBECONFIG, else ~/.kube/config)")
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
