//! krio's pod networking: CNI (our own implementation of the CNI spec),
//! network namespaces and port mappings.

pub mod cni;
pub mod netns;
pub mod podns;
pub mod sysctl;
pub mod userns;
