pub fn native(_args: &[String]) -> Result<(), String> { Err("todo".into()) }
