package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sluice-stream/sluice/coordinator"
	"github.com/sluice-stream/sluice/kafkasrc"
)

func newValidateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "validate -f FILE",
		Short: "check a job file offline, with the coordinator's messages",
		Long: `Check a job file offline as a coordinator checks a new job: every field, the CEL
expressions, and the Kafka policy of the --kafka-file-dir, --allow-kafka-property and
--allowed-bootstrap flags (give them as the coordinator has them). A submit also
checks that the name is free and, for a transactional Kafka sink, the brokers'
transaction timeout: 'sluice submit --dry-run' asks the coordinator.`,
		Args: exactArgs(),
	}
	file := cmd.Flags().StringP("file", "f", "", specFileHelp)
	var policy kafkasrc.Policy
	kafkaPolicyFlags(cmd.Flags(), &policy)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		spec, err := loadSpec(cmd, *file)
		if err != nil {
			return err
		}
		if err := coordinator.CheckSpec(spec, policy); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "job %s: OK\n", spec.GetName())
		return nil
	}
	return cmd
}
