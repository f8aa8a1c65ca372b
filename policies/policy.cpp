namespace sizeguard {}
