//! The [`ConnectGraph`] as Graphviz DOT, line for line what
//! `ipfs-cluster-ctl health graph` prints (its `graph.go`): cluster peers
//! are `box3d` nodes in a `rank="min"` subgraph, IPFS daemons `cylinder`
//! nodes in a `rank="max"` one; this peer is orange with two peripheries,
//! trusted peers orange with ids `T<n>`, other peers `darkorange3`, daemons
//! `turquoise3`, and a daemon that did not answer a `firebrick1` node
//! labelled `IPFS / Errored` behind a dotted edge.
//!
//! One deliberate difference: this peer is always `C0` (the reference
//! numbers peers in id order, so "self" is `C0` only when its id sorts
//! first), which is what scripts grepping for `C0 -> I` assume.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use super::ConnectGraph;

/// The kinds of node, each with its id prefix, colour and shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    SelfPeer,
    Trusted,
    Peer,
    Ipfs,
    IpfsErrored,
}

/// `Qm*abc123`: the first two and last six characters of an id (an id
/// shorter than that is shown whole).
fn shorten(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() < 8 {
        return id.to_string();
    }
    let head: String = chars[..2].iter().collect();
    let tail: String = chars[chars.len() - 6..].iter().collect();
    format!("{head}*{tail}")
}

/// Text inside an HTML-like label: a peer name is whatever its operator
/// typed, and a `<` or `&` in it must not break the file.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Text inside a quoted attribute.
fn quote_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Writes the nodes and edges, numbering nodes as they are written.
struct Writer {
    out: String,
    cluster_nodes: HashMap<String, String>,
    ipfs_nodes: HashMap<String, String>,
}

impl Writer {
    fn node(&mut self, id: &str, kind: Kind, peername: &str) {
        let (prefix, count) = match kind {
            Kind::SelfPeer | Kind::Peer => ("C", self.cluster_nodes.len()),
            Kind::Trusted => ("T", self.cluster_nodes.len()),
            Kind::Ipfs | Kind::IpfsErrored => ("I", self.ipfs_nodes.len()),
        };
        let node_id = format!("{prefix}{count}");
        let (top, bottom) = match kind {
            Kind::Ipfs => ("IPFS".to_string(), shorten(id)),
            Kind::IpfsErrored => ("IPFS".to_string(), "Errored".to_string()),
            _ => (html_escape(peername), shorten(id)),
        };
        let (color, shape) = match kind {
            Kind::SelfPeer | Kind::Trusted => ("orange", "box3d"),
            Kind::Peer => ("darkorange3", "box3d"),
            Kind::Ipfs => ("turquoise3", "cylinder"),
            Kind::IpfsErrored => ("firebrick1", "cylinder"),
        };
        let peripheries = if kind == Kind::SelfPeer {
            "peripheries=\"2\" "
        } else {
            ""
        };
        // Infallible: writing to a String.
        let _ = writeln!(
            self.out,
            "{node_id} [label=< <B> {top} </B> <BR/> <B> {bottom} </B> > group=\"{group}\" \
             color=\"{color}\" style=\"filled\" colorscheme=\"x11\" fontcolor=\"black\" \
             fontname=\"Arial\" shape=\"{shape}\" {peripheries}]",
            group = quote_escape(id),
        );
        match kind {
            Kind::Ipfs | Kind::IpfsErrored => self.ipfs_nodes.insert(id.to_string(), node_id),
            _ => self.cluster_nodes.insert(id.to_string(), node_id),
        };
    }

    fn edge(&mut self, from: Option<&String>, to: Option<&String>, dotted: bool) {
        // An edge to a node that is not drawn (a peer outside the peerset,
        // a daemon of no cluster peer) is left out, as the reference does.
        let (Some(from), Some(to)) = (from, to) else {
            return;
        };
        let style = if dotted { " [ style=\"dotted\" ]" } else { "" };
        let _ = writeln!(self.out, "{from} -> {to}{style}");
    }
}

/// Renders `graph` as DOT. `all_ipfs_peers` draws every swarm peer of the
/// cluster's daemons, not only the links among the cluster's own daemons.
pub fn render(graph: &ConnectGraph, all_ipfs_peers: bool) -> String {
    // The daemons to draw, each with the links to draw from it.
    let mut ipfs_edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (daemon, peers) in &graph.ipfs_links {
        let mut kept = Vec::new();
        for peer in peers {
            if all_ipfs_peers || graph.ipfs_links.contains_key(peer) {
                kept.push(peer.as_str());
            }
        }
        ipfs_edges.insert(daemon, kept);
    }
    if all_ipfs_peers {
        for peers in graph.ipfs_links.values() {
            for peer in peers {
                ipfs_edges.entry(peer).or_default();
            }
        }
    }
    // This peer first, so it is C0; then every other in id order.
    let mut cluster: Vec<&str> = graph
        .cluster_links
        .keys()
        .map(String::as_str)
        .filter(|p| *p != graph.cluster_id)
        .collect();
    if graph.cluster_links.contains_key(&graph.cluster_id) {
        cluster.insert(0, &graph.cluster_id);
    }

    let mut w = Writer {
        out: String::new(),
        cluster_nodes: HashMap::new(),
        ipfs_nodes: HashMap::new(),
    };
    w.out.push_str("digraph cluster {\n");
    w.out
        .push_str("/* The nodes of the connectivity graph */\n");
    w.out.push_str("/* The cluster-service peers */\n");
    w.out.push_str("subgraph  {\nrank=\"min\"\n");
    for peer in &cluster {
        let kind = if *peer == graph.cluster_id {
            Kind::SelfPeer
        } else if graph.cluster_trust_links.get(*peer) == Some(&true) {
            Kind::Trusted
        } else {
            Kind::Peer
        };
        let name = graph.id_to_peername.get(*peer).map_or("", String::as_str);
        w.node(peer, kind, name);
    }
    w.out.push_str("}\n\n");

    w.out.push_str("/* The ipfs peers */\n");
    w.out.push_str("subgraph  {\nrank=\"max\"\n");
    for daemon in ipfs_edges.keys() {
        w.node(daemon, Kind::Ipfs, "");
    }
    for peer in &cluster {
        if !graph.cluster_to_ipfs.contains_key(*peer) {
            w.node(peer, Kind::IpfsErrored, "");
        }
    }
    w.out.push_str("}\n\n");

    w.out
        .push_str("/* Edges representing active connections in the cluster */\n");
    w.out
        .push_str("/* The connections among cluster-service peers */\n");
    for peer in &cluster {
        for other in &graph.cluster_links[*peer] {
            let (from, to) = (
                w.cluster_nodes.get(*peer).cloned(),
                w.cluster_nodes.get(other).cloned(),
            );
            w.edge(from.as_ref(), to.as_ref(), false);
        }
    }
    w.out.push('\n');

    w.out
        .push_str("/* The connections between cluster peers and their ipfs daemons */\n");
    for peer in &cluster {
        let from = w.cluster_nodes.get(*peer).cloned();
        match graph.cluster_to_ipfs.get(*peer) {
            Some(daemon) => {
                let to = w.ipfs_nodes.get(daemon).cloned();
                w.edge(from.as_ref(), to.as_ref(), false);
            }
            None => {
                let to = w.ipfs_nodes.get(*peer).cloned();
                w.edge(from.as_ref(), to.as_ref(), true);
            }
        }
    }
    w.out.push('\n');

    w.out
        .push_str("/* The swarm peer connections among ipfs daemons in the cluster */\n");
    for (daemon, peers) in &ipfs_edges {
        for peer in peers {
            let (from, to) = (
                w.ipfs_nodes.get(*daemon).cloned(),
                w.ipfs_nodes.get(*peer).cloned(),
            );
            w.edge(from.as_ref(), to.as_ref(), false);
        }
    }
    // The reference ends without a newline; a shell prompt after `}` is
    // not worth that fidelity, and dot does not mind.
    w.out.push_str("}\n");
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> String {
        v.to_string()
    }

    /// The three-peer full mesh of the reference's `graph_test.go`.
    fn mesh() -> ConnectGraph {
        let (p1, p2, p3) = (
            "QmUBuxVHoNNjfmNpTad36UeaFQv3gXAtCv9r6KhmeqhEhD",
            "QmV35LjbEGPfN7KfMAJp43VV2enwXqqQf5esx4vUcgHDQJ",
            "QmZ2ckU7G35MYyJgMTwMUnicsGqSy3YUxGBX7qny6MQmJu",
        );
        let (i1, i2, i3) = (
            "QmXbiVZd93SLiu9TAm21F2y9JwGiFLydbEVkPBaMR3DZDV",
            "QmPFKAGZbUjdzt8BBx8VTWCe9UeUQVcoqHFehSPzN5LSsq",
            "QmbU7273zH6jxwDe2nqRmEm2rp5PpqP2xeQr2xCmwbBsuL",
        );
        ConnectGraph {
            cluster_id: s(p1),
            cluster_links: [
                (s(p1), vec![s(p2), s(p3)]),
                (s(p2), vec![s(p1), s(p3)]),
                (s(p3), vec![s(p1), s(p2)]),
            ]
            .into(),
            ipfs_links: [
                (s(i1), vec![s(i2), s(i3)]),
                (s(i2), vec![s(i1), s(i3)]),
                (s(i3), vec![s(i1), s(i2)]),
            ]
            .into(),
            cluster_to_ipfs: [(s(p1), s(i1)), (s(p2), s(i2)), (s(p3), s(i3))].into(),
            ..ConnectGraph::default()
        }
    }

    #[test]
    fn renders_the_reference_graph_line_for_line() {
        let expected = r#"digraph cluster {
/* The nodes of the connectivity graph */
/* The cluster-service peers */
subgraph  {
rank="min"
C0 [label=< <B>  </B> <BR/> <B> Qm*eqhEhD </B> > group="QmUBuxVHoNNjfmNpTad36UeaFQv3gXAtCv9r6KhmeqhEhD" color="orange" style="filled" colorscheme="x11" fontcolor="black" fontname="Arial" shape="box3d" peripheries="2" ]
C1 [label=< <B>  </B> <BR/> <B> Qm*cgHDQJ </B> > group="QmV35LjbEGPfN7KfMAJp43VV2enwXqqQf5esx4vUcgHDQJ" color="darkorange3" style="filled" colorscheme="x11" fontcolor="black" fontname="Arial" shape="box3d" ]
C2 [label=< <B>  </B> <BR/> <B> Qm*6MQmJu </B> > group="QmZ2ckU7G35MYyJgMTwMUnicsGqSy3YUxGBX7qny6MQmJu" color="darkorange3" style="filled" colorscheme="x11" fontcolor="black" fontname="Arial" shape="box3d" ]
}

/* The ipfs peers */
subgraph  {
rank="max"
I0 [label=< <B> IPFS </B> <BR/> <B> Qm*N5LSsq </B> > group="QmPFKAGZbUjdzt8BBx8VTWCe9UeUQVcoqHFehSPzN5LSsq" color="turquoise3" style="filled" colorscheme="x11" fontcolor="black" fontname="Arial" shape="cylinder" ]
I1 [label=< <B> IPFS </B> <BR/> <B> Qm*R3DZDV </B> > group="QmXbiVZd93SLiu9TAm21F2y9JwGiFLydbEVkPBaMR3DZDV" color="turquoise3" style="filled" colorscheme="x11" fontcolor="black" fontname="Arial" shape="cylinder" ]
I2 [label=< <B> IPFS </B> <BR/> <B> Qm*wbBsuL </B> > group="QmbU7273zH6jxwDe2nqRmEm2rp5PpqP2xeQr2xCmwbBsuL" color="turquoise3" style="filled" colorscheme="x11" fontcolor="black" fontname="Arial" shape="cylinder" ]
}

/* Edges representing active connections in the cluster */
/* The connections among cluster-service peers */
C0 -> C1
C0 -> C2
C1 -> C0
C1 -> C2
C2 -> C0
C2 -> C1

/* The connections between cluster peers and their ipfs daemons */
C0 -> I1
C1 -> I0
C2 -> I2

/* The swarm peer connections among ipfs daemons in the cluster */
I0 -> I1
I0 -> I2
I1 -> I0
I1 -> I2
I2 -> I1
I2 -> I0
}
"#;
        assert_eq!(render(&mesh(), false), expected);
    }

    #[test]
    fn trusted_and_errored_peers_and_self_first() {
        let mut g = mesh();
        let p3 = s("QmZ2ckU7G35MYyJgMTwMUnicsGqSy3YUxGBX7qny6MQmJu");
        // Self sorts last, its daemon is down, and p3 is trusted.
        g.cluster_id = p3.clone();
        g.cluster_trust_links
            .insert(s("QmV35LjbEGPfN7KfMAJp43VV2enwXqqQf5esx4vUcgHDQJ"), true);
        g.cluster_to_ipfs.remove(&p3);
        g.ipfs_links
            .remove("QmbU7273zH6jxwDe2nqRmEm2rp5PpqP2xeQr2xCmwbBsuL");
        g.id_to_peername.insert(p3.clone(), s("a<b>&c"));
        let dot = render(&g, false);
        assert!(dot.contains("C0 [label=< <B> a&lt;b&gt;&amp;c </B> <BR/> <B> Qm*6MQmJu </B> > group=\"QmZ2ckU7G35MYyJgMTwMUnicsGqSy3YUxGBX7qny6MQmJu\" color=\"orange\""), "{dot}");
        assert!(dot.contains("peripheries=\"2\""));
        assert!(
            dot.contains("T2 [label=< <B>  </B> <BR/> <B> Qm*cgHDQJ </B> >"),
            "{dot}"
        );
        assert!(dot.contains("I2 [label=< <B> IPFS </B> <BR/> <B> Errored </B> > group=\"QmZ2ckU7G35MYyJgMTwMUnicsGqSy3YUxGBX7qny6MQmJu\" color=\"firebrick1\""), "{dot}");
        assert!(dot.contains("\nC0 -> I2 [ style=\"dotted\" ]\n"), "{dot}");
        assert!(!dot.contains("-> I3"), "{dot}");
    }

    #[test]
    fn all_ipfs_peers_draws_outside_daemons() {
        let mut g = mesh();
        let outside = s("QmQsdAdCHs4PRLi5tcoLfasYppryqQENxgAy4b2aS8xccb");
        g.ipfs_links
            .get_mut("QmXbiVZd93SLiu9TAm21F2y9JwGiFLydbEVkPBaMR3DZDV")
            .unwrap()
            .push(outside);
        assert!(!render(&g, false).contains("Qm*S8xccb"));
        let all = render(&g, true);
        // The outside daemon sorts second (QmP… < QmQ… < QmX…), so it is I1.
        assert!(
            all.contains("I1 [label=< <B> IPFS </B> <BR/> <B> Qm*S8xccb </B> >"),
            "{all}"
        );
        assert!(all.contains("\nI2 -> I1\n"), "{all}");
    }

    #[test]
    fn odd_input_renders_without_panicking() {
        let g = ConnectGraph {
            cluster_id: s("x"),
            cluster_links: [(s("x"), vec![s("nobody"), s("")]), (s("\"q"), vec![])].into(),
            ipfs_links: [(s("ab"), vec![s("ab")])].into(),
            cluster_to_ipfs: [(s("x"), s("ab")), (s("gone"), s("nowhere"))].into(),
            ..ConnectGraph::default()
        };
        let dot = render(&g, true);
        assert!(dot.contains("group=\"\\\"q\""), "{dot}");
        assert!(dot.contains("C0 -> I0\n"), "{dot}");
        assert!(render(&ConnectGraph::default(), false).starts_with("digraph cluster {"));
    }
}
