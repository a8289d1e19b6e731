// The ranks of a distributed run, as the coordinator (distributed/coordinator.h) sees them: numbered
// processes that exchange tagged byte messages. The MPI implementation is distributed/mpi_cluster.h;
// the tests use an in-process one. Nothing above this interface includes <mpi.h>.
//
// Only the thread that made the cluster calls it (MPI_THREAD_FUNNELED): work that runs on other
// threads leaves the messaging to that thread (Coordinator::busy).
#pragma once
#include <optional>
#include <string>

namespace nammkit::dist {

struct ClusterMessage {
  int source = 0;
  int tag = 0;
  std::string bytes;
};

class Cluster {
 public:
  virtual ~Cluster() = default;
  virtual int rank() const = 0;  // 0 .. size()-1; rank 0 is the root
  virtual int size() const = 0;
  // The index of this rank among the ranks on its host (0 .. ranks per host - 1): picks its GPU.
  virtual int local_rank() const = 0;
  // The host name of a rank (known to every rank from the start, for error messages).
  virtual const std::string& host(int rank) const = 0;
  // Sends without blocking; the bytes are delivered in order per (source, destination) pair.
  virtual void send(int destination, int tag, std::string bytes) = 0;
  // The next message that has arrived from any rank, or none (never blocks).
  virtual std::optional<ClusterMessage> poll() = 0;
  // Ends every rank of the run with this exit code (the way out when a rank cannot be reached).
  [[noreturn]] virtual void abort(int exit_code) = 0;
};

}  // namespace nammkit::dist
