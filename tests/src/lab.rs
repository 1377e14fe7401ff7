//! Network-namespace lab (filled in by the veth tests).
