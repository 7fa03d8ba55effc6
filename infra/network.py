"""Where the two load balancers live: an existing VPC's public subnets, or a minimal new VPC.

The Lambdas are not in the VPC (they only call AWS APIs and Fleet over the internet), so the
network is just what an internet-facing Application Load Balancer needs: two public subnets in
two availability zones behind an internet gateway, and a security group open on 80 (redirect)
and 443. No NAT gateway, no private subnets. The ALB invokes Lambda targets directly, not over
the network, so the security group has no egress rule at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .settings import StackSettings

VPC_CIDR = "10.42.0.0/16"
SUBNET_CIDRS = ("10.42.0.0/24", "10.42.1.0/24")


@dataclass(frozen=True)
class AwsContext:
    """Account, region and partition, read once before anything is declared."""

    account_id: str
    region: str
    partition: str
    dns_suffix: str

    @classmethod
    def lookup(cls) -> "AwsContext":
        identity = aws.get_caller_identity()
        region = aws.get_region()
        partition = aws.get_partition()
        return cls(
            account_id=identity.account_id,
            region=region.region or region.name,
            partition=partition.partition,
            dns_suffix=partition.dns_suffix,
        )

    def arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        return (f"arn:{self.partition}:{service}:{self.region if region else ''}:"
                f"{self.account_id if account else ''}:{resource}")

    def service_host(self, service: str) -> str:
        return f"{service}.{self.region}.{self.dns_suffix}"


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    subnet_ids: list[pulumi.Output[str]]
    security_group_id: pulumi.Output[str]

    def __init__(self, name: str, cfg: StackSettings, opts: pulumi.ResourceOptions | None = None):
        super().__init__("devicegate:index:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = {"devicegate:stack": cfg.stack}

        if cfg.uses_existing_vpc:
            self.vpc_id = pulumi.Output.from_input(cfg.vpc_id)
            self.subnet_ids = [pulumi.Output.from_input(s) for s in cfg.public_subnet_ids]
        else:
            zones = aws.get_availability_zones(state="available").names
            if len(zones) < 2:
                raise pulumi.RunError("this region has fewer than two available zones; an ALB needs two")
            vpc = aws.ec2.Vpc("vpc", cidr_block=VPC_CIDR, enable_dns_support=True, enable_dns_hostnames=True,
                              tags={**tags, "Name": cfg.prefix}, opts=child)
            gateway = aws.ec2.InternetGateway("igw", vpc_id=vpc.id, tags=tags, opts=child)
            table = aws.ec2.RouteTable("public", vpc_id=vpc.id, tags=tags,
                                       routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": gateway.id}], opts=child)
            self.subnet_ids = []
            for index, (zone, cidr) in enumerate(zip(zones[:2], SUBNET_CIDRS)):
                subnet = aws.ec2.Subnet(f"public-{index}", vpc_id=vpc.id, cidr_block=cidr, availability_zone=zone,
                                        map_public_ip_on_launch=False, tags={**tags, "Name": f"{cfg.prefix}-{zone}"},
                                        opts=child)
                aws.ec2.RouteTableAssociation(f"public-{index}", subnet_id=subnet.id, route_table_id=table.id,
                                              opts=child)
                self.subnet_ids.append(subnet.id)
            self.vpc_id = vpc.id

        group = aws.ec2.SecurityGroup(
            "alb",
            description="devicegate load balancers: HTTPS in, HTTP in (redirected)",
            vpc_id=self.vpc_id,
            ingress=[
                {"protocol": "tcp", "from_port": port, "to_port": port, "cidr_blocks": ["0.0.0.0/0"],
                 "ipv6_cidr_blocks": ["::/0"], "description": what}
                for port, what in ((443, "HTTPS"), (80, "HTTP, redirected to HTTPS"))
            ],
            egress=[],  # Lambda targets are invoked directly: "no requirements for the outbound rules"
            tags=tags,
            opts=child,
        )
        self.security_group_id = group.id
        self.register_outputs({"vpc_id": self.vpc_id, "subnet_ids": self.subnet_ids})
