package coordinator

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
)

func durationpbNew(d time.Duration) *durationpb.Duration { return durationpb.New(d) }
