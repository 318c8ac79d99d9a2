package projector

import (
	"context"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/bigquery/storage/managedwriter"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// NewBigQueryClient connects to BigQuery in project with Application
// Default Credentials or, when endpoint is set (an emulator, e.g.
// http://127.0.0.1:9050), to that endpoint without authentication.
func NewBigQueryClient(ctx context.Context, project, endpoint string) (*bigquery.Client, error) {
	var opts []option.ClientOption
	if endpoint != "" {
		opts = append(opts, option.WithEndpoint(endpoint), option.WithoutAuthentication())
	}
	return bigquery.NewClient(ctx, project, opts...)
}

// NewBigQueryWriter connects to the BigQuery Storage Write API of project
// with Application Default Credentials or, when endpoint is set (an
// emulator's gRPC port, e.g. 127.0.0.1:9060), to that endpoint in
// plaintext without authentication.
func NewBigQueryWriter(ctx context.Context, project, endpoint string) (*managedwriter.Client, error) {
	var opts []option.ClientOption
	if endpoint != "" {
		opts = append(opts, option.WithEndpoint(endpoint), option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	}
	return managedwriter.NewClient(ctx, project, opts...)
}
