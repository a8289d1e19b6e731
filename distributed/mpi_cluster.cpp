#include "distributed/mpi_cluster.h"

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <thread>
#include <vector>

#include "core/error.h"

#if NAMMKIT_HAVE_MPI
// The C API only: the MPI C++ bindings are deprecated and would need libmpi_cxx.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace nammkit::dist {

bool mpi_built() { return NAMMKIT_HAVE_MPI != 0; }

bool launched_by_mpi() {
  // OpenMPI's launcher sets OMPI_COMM_WORLD_SIZE; PMIx (OpenMPI 4/5, srun --mpi=pmix) sets PMIX_RANK;
  // PMI-1/2 launchers (MPICH's mpiexec, srun --mpi=pmi2) set PMI_RANK.
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"})
    if (std::getenv(name)) return true;
  return false;
}

#if NAMMKIT_HAVE_MPI
namespace {

void check(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  fail("mpi", std::string(call) + ": " + std::string(text, size_t(length)));
}

class MpiCluster final : public Cluster {
 public:
  MpiCluster() {
    int provided = 0;
    check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    if (provided < MPI_THREAD_FUNNELED)
      fail("mpi", "MPI_Init_thread: the MPI library does not offer MPI_THREAD_FUNNELED");
    check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size");
    // Every rank learns every host name now, while all are alive, so errors can name them later.
    char name[MPI_MAX_PROCESSOR_NAME] = {};
    int length = 0;
    check(MPI_Get_processor_name(name, &length), "MPI_Get_processor_name");
    std::vector<char> all(size_t(size_) * MPI_MAX_PROCESSOR_NAME);
    check(MPI_Allgather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR,
                        MPI_COMM_WORLD),
          "MPI_Allgather");
    for (int r = 0; r < size_; ++r) {
      const char* h = all.data() + size_t(r) * MPI_MAX_PROCESSOR_NAME;
      hosts_.emplace_back(h, strnlen(h, MPI_MAX_PROCESSOR_NAME));
    }
    MPI_Comm node;
    check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node),
          "MPI_Comm_split_type");
    check(MPI_Comm_rank(node, &local_rank_), "MPI_Comm_rank");
    MPI_Comm_free(&node);
  }

  ~MpiCluster() override {
    // Let the last sends (a reply, a stop) leave before finalising, but never wait for a dead peer.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!pending_.empty() && std::chrono::steady_clock::now() < deadline) {
      progress();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  const std::string& host(int rank) const override { return hosts_.at(size_t(rank)); }

  void send(int destination, int tag, std::string bytes) override {
    if (bytes.size() > size_t(INT_MAX)) fail("mpi", "send: message of " + std::to_string(bytes.size()) + " bytes");
    Pending& p = pending_.emplace_back();
    p.bytes = std::move(bytes);
    check(MPI_Isend(p.bytes.data(), int(p.bytes.size()), MPI_BYTE, destination, tag, MPI_COMM_WORLD, &p.request),
          "MPI_Isend");
    progress();
  }

  std::optional<ClusterMessage> poll() override {
    progress();
    int flag = 0;
    MPI_Status status;
    check(MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &status), "MPI_Iprobe");
    if (!flag) return std::nullopt;
    int count = 0;
    check(MPI_Get_count(&status, MPI_BYTE, &count), "MPI_Get_count");
    ClusterMessage m;
    m.source = status.MPI_SOURCE;
    m.tag = status.MPI_TAG;
    m.bytes.resize(size_t(count));
    check(MPI_Recv(m.bytes.data(), count, MPI_BYTE, m.source, m.tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE), "MPI_Recv");
    return m;
  }

  [[noreturn]] void abort(int exit_code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);
  }

 private:
  struct Pending {
    std::string bytes;
    MPI_Request request = MPI_REQUEST_NULL;
  };
  // Frees the buffers of completed sends.
  void progress() {
    for (auto it = pending_.begin(); it != pending_.end();) {
      int done = 0;
      check(MPI_Test(&it->request, &done, MPI_STATUS_IGNORE), "MPI_Test");
      it = done ? pending_.erase(it) : std::next(it);
    }
  }

  int rank_ = 0, size_ = 1, local_rank_ = 0;
  std::vector<std::string> hosts_;
  std::list<Pending> pending_;  // a list: MPI holds pointers into the buffers until the send completes
};

}  // namespace

std::unique_ptr<Cluster> open_mpi_cluster() {
  if (!launched_by_mpi()) return nullptr;
  return std::make_unique<MpiCluster>();
}
#else
std::unique_ptr<Cluster> open_mpi_cluster() {
  if (!launched_by_mpi()) return nullptr;
  fail("nammkit",
       "started by an MPI launcher, but this build has no MPI (install libopenmpi-dev and configure with "
       "-DNAMMKIT_MPI=ON)");
}
#endif

}  // namespace nammkit::dist
