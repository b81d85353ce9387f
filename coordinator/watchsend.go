package coordinator

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// watchReadGroup is how many changed papers a watcher reads from the store at a time.
const watchReadGroup = 256

// sendUpdate sends one coalesced update, split into messages of at most maxWatchMessageBytes:
// every part but the last carries only paper updates and more = true; the last carries the
// batch, the active downloads and the hosts. Parts are built one at a time, each just before
// its Send, so a watcher whose client stopped reading holds one message, not the whole update.
func (a *api) sendUpdate(stream pb.CoordinatorService_WatchBatchServer, w *watcher, u *watchUpdate) error {
	defer w.sending.Store(0)
	tail := &pb.WatchBatchResponse{Batch: u.batch, Hosts: u.hosts, HostsOmitted: u.omitted}
	// The active list is cut by bytes too (URLs are up to 4 KB each).
	activeBytes := 0
	for _, ad := range u.active {
		n := proto.Size(ad) + protoEntryOverhead
		if activeBytes+n > maxActiveListedBytes {
			break
		}
		activeBytes += n
		tail.Active = append(tail.Active, ad)
	}
	tailSize := proto.Size(tail)
	ids := u.changed()
	held := int64(4 * len(ids))
	part := &pb.WatchBatchResponse{Snapshot: u.snapshot}
	size := 0
	send := func(m *pb.WatchBatchResponse, more bool) error {
		m.More = more
		w.sending.Store(held + int64(proto.Size(m)))
		w.noteQueued(0)
		return stream.Send(m)
	}
	for off := 0; off < len(ids); off += watchReadGroup {
		group := ids[off:min(off+watchReadGroup, len(ids))]
		ups, err := a.paperUpdates(group)
		if err != nil {
			return status.Errorf(codes.Internal, "read paper updates: %v", err)
		}
		for _, up := range ups {
			n := proto.Size(up) + protoEntryOverhead
			if size+n > maxWatchMessageBytes && len(part.PaperUpdates) > 0 {
				if err := send(part, true); err != nil {
					return err
				}
				part, size = &pb.WatchBatchResponse{}, 0
			}
			part.PaperUpdates = append(part.PaperUpdates, up)
			size += n
		}
	}
	if size+tailSize > maxWatchMessageBytes && len(part.PaperUpdates) > 0 {
		if err := send(part, true); err != nil {
			return err
		}
		part = &pb.WatchBatchResponse{}
	}
	part.Batch, part.Active, part.Hosts, part.HostsOmitted = tail.Batch, tail.Active, tail.Hosts, tail.HostsOmitted
	return send(part, false)
}
