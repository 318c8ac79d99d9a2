package projector

import (
	"context"

	"cloud.google.com/go/bigquery"
	"google.golang.org/api/option"
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
