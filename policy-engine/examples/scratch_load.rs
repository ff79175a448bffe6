fn main() {
    let path = std::env::args().nth(1).unwrap_or_default();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    match policy_engine::load_str(&text, &policy_engine::LoadOptions::default()) {
        Ok((set, w)) => {
            println!(
                "OK {} AP {} PA",
                set.authorization_policies.len(),
                set.peer_authentications.len()
            );
            print!("{w}");
        }
        Err(d) => print!("{d}"),
    }
}
