package zzwarm

import (
	_ "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	_ "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	_ "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/ratelimit"
	_ "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/vbauerster/mpb/v8"
	_ "go.etcd.io/bbolt"
	_ "go.uber.org/goleak"
	_ "gocloud.dev/blob/fileblob"
	_ "gocloud.dev/blob/s3blob"
	_ "golang.org/x/time/rate"
	_ "pgregory.net/rapid"
	_ "google.golang.org/grpc/test/bufconn"
)
