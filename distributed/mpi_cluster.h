// The Cluster of an MPI run: one process per rank over MPI_COMM_WORLD, started by mpirun / mpiexec
// or by Slurm's srun. Built when CMake finds MPI (-DNAMMKIT_MPI=AUTO|ON|OFF).
#pragma once
#include <memory>

#include "distributed/cluster.h"

namespace nammkit::dist {

// Whether this build can run under MPI.
bool mpi_built();

// Whether an MPI launcher started this process (OpenMPI's mpirun, PMI or PMIx: mpiexec, srun).
bool launched_by_mpi();

// The MPI cluster when launched_by_mpi(), else nullptr (a plain single-process run, MPI never
// initialised). Throws Error when an MPI launcher started a build without MPI. MPI is finalised when the
// cluster is destroyed; make at most one per process.
std::unique_ptr<Cluster> open_mpi_cluster();

}  // namespace nammkit::dist
